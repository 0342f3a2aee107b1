"""Twirled jobs and readout calibration on the device, through the real scheduler.

A twirled job must keep every invariant of an ordinary one: exactly the shots asked
for (also across slices and a partial run), one calibration, no shot counted twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qrt_ray.actors.device import Device
from qrt_ray.actors.ports import LocalPorts
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.config import DriftConfig, PolicyConfig, SchedulingConfig
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec, TwirlSpec
from qrt_ray.results import decode_result
from qrt_ray.store import SQLiteJobStore
from tests.local_farm import FARM, drive, spec


def _farm(tmp_path: Path, slice_shots: int = 0):  # type: ignore[no-untyped-def]
    scheduling = SchedulingConfig(slice_shots=slice_shots)
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    devices = [Device(d, max_parallel_threads=1, scheduling=scheduling) for d in FARM.devices]
    sched = Scheduler(store, LocalPorts(devices), policy_config=PolicyConfig(scheduling=scheduling))
    return store, devices, sched


def _result(store: SQLiteJobStore, job_id: str, shots: int):  # type: ignore[no-untyped-def]
    rec = store.get(job_id)
    assert rec.state is JobState.DONE, (rec.state, rec.error)
    result = decode_result(store.get_blob(rec.result_sha256))
    ledger = store.shot_ledger(job_id)
    # every run counted once, and the counted runs add up to the shots asked for
    keys = [(r.attempt, r.first_shot) for r in ledger]
    assert len(keys) == len(set(keys))
    assert sum(r.shots for r in ledger) == shots
    assert sum(result.counts().values()) == shots
    return result


def test_twirled_jobs_keep_exact_shots_across_slices_and_a_partial_run(tmp_path: Path) -> None:
    store, devices, sched = _farm(tmp_path, slice_shots=400)
    twirl = TwirlSpec(gates=True, measure=True, randomizations=6)
    devices[0].faults.partial_fractions = [0.5]

    async def main() -> None:
        await sched.start()
        views = await sched.submit(
            [
                spec(3, shots=1000, seed=5, device="manila", twirling=twirl),
                spec(3, shots=1000, seed=5, device="manila"),
            ]
        )
        await drive(sched, devices)
        await sched.stop()
        twirled = _result(store, views[0][0].job_id, 1000)
        plain = _result(store, views[1][0].job_id, 1000)
        good = []
        for result in (twirled, plain):
            counts = result.counts()
            assert sum(counts.values()) == 1000
            good.append(counts.get("000", 0) + counts.get("111", 0))
        # a noisy GHZ: the two ideal outcomes dominate, in the circuit's own frame, and
        # twirling the same noise changes its form, not its size
        assert min(good) > 700 and abs(good[0] - good[1]) < 100
        assert store.get(views[0][0].job_id).spec.twirling == twirl
        store.close()

    asyncio.run(main())


def test_a_seeded_twirled_job_reproduces(tmp_path: Path) -> None:
    twirl = TwirlSpec(gates=True, measure=True, randomizations=4)

    async def once(path: Path) -> dict[str, int]:
        path.mkdir()
        store, devices, sched = _farm(path)
        await sched.start()
        ((rec, _),) = await sched.submit(
            [spec(3, shots=500, seed=11, device="nairobi", twirling=twirl)]
        )
        await drive(sched, devices)
        await sched.stop()
        counts = _result(store, rec.job_id, 500).counts()
        store.close()
        return counts

    assert asyncio.run(once(tmp_path / "a")) == asyncio.run(once(tmp_path / "b"))


def test_device_readout_calibration_matches_its_noise_and_is_reused() -> None:
    device = Device(FARM.devices[0], max_parallel_threads=1)
    truth = device.calibration.readout_error
    cal, spent = device.readout_calibration([0, 2, 4], shots=20_000, max_age_s=600, seed=3)
    assert spent == 40_000 and cal.calibration_id == device.calibration.calibration_id
    for k, q in enumerate(cal.qubits):
        # the fake backends' readout errors are nearly symmetric: the mean of the two
        # directions is the calibration's figure, within shot noise (and the X gate)
        assert (cal.p01[k] + cal.p10[k]) / 2 == _approx(truth[q], 0.006)
    again, spent = device.readout_calibration([2], shots=20_000, max_age_s=600)
    assert spent == 0 and again.p01 == (cal.p01[1],)
    device.recalibrate()  # nothing drifted: the same calibration, so the same figures
    assert device.calibration.calibration_id == cal.calibration_id
    _, spent = device.readout_calibration([2], shots=1000, max_age_s=600)
    assert spent == 0


def test_a_new_calibration_measures_readout_again() -> None:
    now = [0.0]
    config = FARM.devices[1].model_copy(
        update={"drift": DriftConfig(seed=5, time_scale=3600, error_trend_per_hour=0.15)}
    )
    device = Device(config, max_parallel_threads=1, clock=lambda: now[0])
    cal, spent = device.readout_calibration([2], shots=1000, max_age_s=600, seed=3)
    assert spent == 2000
    now[0] = 24.0  # a day of drift at 3,600x: the recalibration measures new values
    new = device.recalibrate()
    assert new.calibration_id != cal.calibration_id
    again, spent = device.readout_calibration([2], shots=1000, max_age_s=600, seed=3)
    assert spent == 2000 and again.calibration_id == new.calibration_id


def _approx(value: float, abs_: float):  # type: ignore[no-untyped-def]
    import pytest

    return pytest.approx(value, abs=abs_)


def test_decoupled_jobs_run_with_echoes_on_idle_qubits(tmp_path: Path) -> None:
    from qiskit import transpile
    from qiskit.quantum_info import Statevector

    from qrt_ray.circuits import parse_qasm
    from qrt_ray.mitigation.dd import pad_dynamical_decoupling
    from qrt_ray.models import DecouplingSpec
    from qrt_ray.noise import target_from_snapshot

    device = Device(FARM.devices[1], max_parallel_threads=1)
    target = target_from_snapshot(device.calibration, device._backend.target)
    compiled = transpile(parse_qasm(ghz_qasm(4)), target=target, seed_transpiler=1)
    padded = pad_dynamical_decoupling(compiled, target)
    ops = padded.count_ops()
    assert ops.get("x", 0) > compiled.count_ops().get("x", 0) and ops.get("delay", 0) > 0
    ideal = Statevector(compiled.remove_final_measurements(inplace=False))
    echoed = Statevector(padded.remove_final_measurements(inplace=False))
    assert ideal.equiv(echoed)  # the echoes compose to the identity

    store, devices, sched = _farm(tmp_path)

    async def main() -> None:
        await sched.start()
        ((rec, _),) = await sched.submit(
            [spec(4, shots=700, seed=2, device="nairobi", dynamical_decoupling=DecouplingSpec())]
        )
        await drive(sched, devices)
        await sched.stop()
        counts = _result(store, rec.job_id, 700).counts()
        assert counts.get("0000", 0) + counts.get("1111", 0) > 450
        store.close()

    asyncio.run(main())


def ghz_qasm(n: int) -> str:
    from tests.local_farm import ghz

    return ghz(n)


def test_a_long_batch_runs_in_pieces_and_reports_progress_after_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qrt_ray.actors.executor as device_module

    monkeypatch.setattr(device_module, "CALL_CIRCUITS", 2)
    store, devices, sched = _farm(tmp_path)
    beats: list[str] = []
    for d in devices:
        d.on_progress = lambda name=d.name: beats.append(name)
    twirl = TwirlSpec(gates=True, measure=True, randomizations=4)
    circuits = tuple(spec(n).circuits[0] for n in (2, 3, 2, 3, 2))

    async def main() -> None:
        await sched.start()
        views = await sched.submit(
            [
                JobSpec(circuits=circuits, shots=400, seed=3, device="manila"),
                JobSpec(circuits=circuits, shots=400, seed=3, device="manila", twirling=twirl),
            ]
        )
        await drive(sched, devices)
        await sched.stop()
        for (rec, _), twirled in zip(views, (False, True), strict=True):
            result = _result(store, rec.job_id, 400)
            for k, n in enumerate((2, 3, 2, 3, 2)):
                counts = result.counts(k)
                assert sum(counts.values()) == 400
                # a GHZ state: mostly all-0 or all-1, so no piece's counts went astray
                assert counts.get("0" * n, 0) + counts.get("1" * n, 0) > 300, (twirled, k)
        store.close()

    asyncio.run(main())
    # plain: 5 circuits in 3 calls; twirled: 20 copies of 100 shots in 10 calls
    assert beats.count("manila") >= 3 + 10
