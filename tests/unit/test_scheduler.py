"""The scheduler's whole logic without Ray: in-process devices driven by the test."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from qiskit import QuantumCircuit

from qrt_ray.actors.device import Device, WorkItem
from qrt_ray.actors.ports import LocalPorts
from qrt_ray.actors.scheduler import FIRST_CHUNK, Scheduler, chunk_cap
from qrt_ray.circuits import to_qasm
from qrt_ray.compiler import compile_circuits
from qrt_ray.config import SchedulingConfig
from qrt_ray.errors import FarmBusyError, JobNotFoundError, PlacementError, ValidationError
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.results import decode_result
from qrt_ray.store import JobRecord, SQLiteJobStore, StateUpdate
from tests.local_farm import (
    FARM,
    REPORT_KEY,
    drive,
    drive_until_crash,
    drive_until_postprocessing,
    ghz,
    make,
    spec,
)

S = JobState


def test_job_walks_the_whole_lifecycle(tmp_path: Path, store_url: str) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path, store_url=store_url)
        await sched.start()
        ((rec, created),) = await sched.submit([spec(shots=700, seed=5)])
        assert created and rec.state is S.QUEUED
        await drive(sched, devices)
        await sched.stop()
        done = store.get(rec.job_id)
        assert done.state is S.DONE
        result = decode_result(store.get_blob(done.result_sha256))
        assert sum(result.counts().values()) == 700
        assert result.metadata.calibration_id == done.calibration_id
        assert result.metadata.compile[0].device == done.device
        assert [e.to_state for e in store.events(rec.job_id)] == [
            S.QUEUED,
            S.COMPILING,
            S.PLACED,
            S.RUNNING,
            S.POSTPROCESSING,
            S.DONE,
        ]
        store.close()

    asyncio.run(main())


def test_reading_finished_jobs_costs_a_store_read_per_call_not_per_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        done = [
            rec.job_id for rec, _ in await sched.submit([spec(shots=50, seed=i) for i in range(6)])
        ]
        await drive(sched, devices)
        await sched.stop()  # the loop is stopped: the next job stays QUEUED, live
        ((queued, _),) = await sched.submit([spec(shots=60)])
        reads: list[str] = []
        real_get = store.get

        def counted_get(job_id: str) -> JobRecord:
            reads.append(job_id)
            return real_get(job_id)

        monkeypatch.setattr(store, "get", counted_get)
        states = await sched.wait([*done, queued.job_id], 0)
        assert states == {**dict.fromkeys(done, S.DONE), queued.job_id: S.QUEUED}
        blobs = await sched.result_blobs(done)
        assert [sum(decode_result(b).counts().values()) for _, b in blobs] == [50] * 6
        assert await sched.done_now([queued.job_id, *done, "job-unknown"], 1 << 30) == done
        # read-ahead takes results in order while they fit its byte budget
        two = sum(len(b) for _, b in blobs[:2])
        assert await sched.done_now(done, two) == done[:2]
        assert reads == []  # states and results came from batch reads
        with pytest.raises(JobNotFoundError, match="no such job"):
            await sched.wait([done[0], "job-0000000000000000"], 0)
        store.close()

    asyncio.run(main())


def test_one_key_twice_in_one_call_is_one_job_or_a_clear_error(tmp_path: Path) -> None:
    async def main() -> None:
        store, _, sched = make(tmp_path)
        a = spec(shots=100, idempotency_key="twice")
        ((first, made), (second, again)) = await sched.submit([a, a])
        assert made and not again and first.job_id == second.job_id
        other = spec(shots=200, idempotency_key="again")
        with pytest.raises(ValidationError, match=r"jobs\[1\].idempotency_key.*jobs\[0\]"):
            await sched.submit([other, other.model_copy(update={"shots": 300})])
        assert store.find_by_key("default", "again") is None  # nothing stored
        store.close()

    asyncio.run(main())


def test_jobs_placed_in_one_pass_see_each_others_work(tmp_path: Path) -> None:
    """No herd: each placement of a pass adds its expected run to the device's wait, so
    the next job of the same pass sees it, and a job that prices waiting spreads."""

    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        weights = {"fidelity": 1.0, "delay": 50.0}
        admitted = await sched.submit([spec(3, shots=4000, weights=weights) for _ in range(6)])
        await drive(sched, devices)
        await sched.stop()
        placed = [store.get(rec.job_id).placement for rec, _ in admitted]
        store.close()
        assert {p["device"] for p in placed} == {"manila", "nairobi"}
        for device in ("manila", "nairobi"):
            mine = [p["chosen"] for p in placed if p["device"] == device]
            expected = 0.0
            for chosen in mine:  # in placement order: each waits for those before it
                assert chosen["wait_s"] == pytest.approx(expected, abs=2e-3)
                expected += chosen["run_s"]

    asyncio.run(main())


def test_placement_is_ranked_explained_and_stored_with_the_job(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        ((rec, _),) = await sched.submit([spec(3)])
        ((cheap, _),) = await sched.submit([spec(3, optimize="cost")])
        await drive(sched, devices)
        done = store.get(rec.job_id)
        placement = done.placement
        ranking = placement["ranking"]
        assert done.device == ranking[0][0] == placement["chosen"]["device"]
        assert ranking[0][1] >= ranking[1][1]
        assert placement["policy"] == "composite"
        assert {d["device"] for d in placement["devices"]} == {"manila", "nairobi"}
        assert 0 < placement["chosen"]["fidelity"] <= 1
        assert placement["chosen"]["layout"] and placement["chosen"]["cost_usd"] > 0
        # The compiler used the chosen layout (or a post-routing improvement of it).
        assert done.compile_info is not None and len(done.compile_info[0]["layout"]) == 3
        assert "compile" not in placement  # its own field now, not inside the placement
        # optimize="cost" takes the cheaper device (manila costs less per job and shot).
        assert store.get(cheap.job_id).device == "manila"
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_limits_no_device_meets_fail_at_submit_and_say_what_would(tmp_path: Path) -> None:
    async def main() -> None:
        store, _, sched = make(tmp_path)
        await sched.start()
        with pytest.raises(PlacementError, match=r"min_fidelity=0.999 but the best estimate"):
            await sched.submit([spec(3, min_fidelity=0.999)])
        with pytest.raises(PlacementError, match=r"max_cost_usd=0.001 but the cheapest"):
            await sched.submit([spec(3, max_cost_usd=0.001)])
        assert store.list_jobs() == []
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_a_routed_circuit_is_compiled_from_placements_layout_and_keeps_the_best(
    tmp_path: Path,
) -> None:
    """Placement's layout travels to the compiler even where it needs SWAPs; the
    compiler keeps it or its own layout, whichever has the higher ESP, never worse."""
    store, devices, sched = make(tmp_path)
    asked: list[object] = []
    real = sched.ports.compile

    async def spying(device, texts, **kw):  # type: ignore[no-untyped-def]
        asked.extend(kw["layouts"])
        return await real(device, texts, **kw)

    sched.ports.compile = spying  # type: ignore[method-assign]
    # Every pair interacts: no 4-qubit layout on manila or nairobi avoids SWAPs.
    qc = QuantumCircuit(4)
    for a in range(4):
        for b in range(a + 1, 4):
            qc.cx(a, b)
    qc.measure_all()
    text = to_qasm(qc)

    async def main() -> None:
        await sched.start()
        ((rec, _),) = await sched.submit([JobSpec(circuits=(text,), shots=200, seed=3)])
        await drive(sched, devices)
        await sched.stop()
        done = store.get(rec.job_id)
        assert done.state is S.DONE
        chosen = done.placement["chosen"]
        assert chosen["swaps"] > 0
        assert asked == [tuple(chosen["layout"])]
        dev = next(d for d in devices if d.name == done.device)
        cal_id, target = dev.compile_target()
        (own,) = compile_circuits(
            [text], target, device=dev.name, calibration_id=cal_id, seed_transpiler=11
        )
        result = decode_result(store.get_blob(done.result_sha256))
        assert result.metadata.compile[0].esp >= own.info.esp
        store.close()

    asyncio.run(main())


def _shapes_that_place_apart() -> list[str]:
    """Three 3-qubit circuits that placement alone maps to different qubits."""
    texts = []
    for pairs in ([(0, 1), (1, 2)], [(1, 2), (0, 1), (1, 2), (1, 2), (1, 2)], [(0, 2)] * 4):
        qc = QuantumCircuit(3)
        qc.h(0)
        for a, b in pairs:
            qc.cx(a, b)
        qc.measure_all()
        texts.append(to_qasm(qc))
    return texts


def test_a_layout_group_runs_on_the_qubits_of_its_first_circuit(tmp_path: Path) -> None:
    """ZNE's noise factors and a PUB's parameter sets are combined: they must run on
    the same physical qubits, not wherever each circuit alone would go."""
    store, devices, sched = make(tmp_path)
    asked: list[tuple[object, object]] = []
    real = sched.ports.compile

    async def spying(device, texts, **kw):  # type: ignore[no-untyped-def]
        asked.extend(zip(kw["layouts"], kw["placement_esp"], strict=True))
        return await real(device, texts, **kw)

    sched.ports.compile = spying  # type: ignore[method-assign]
    texts = tuple(_shapes_that_place_apart())

    async def main() -> None:
        await sched.start()
        alone = [
            (await sched.submit([JobSpec(circuits=(t,), shots=100, device="nairobi")]))[0][0]
            for t in texts
        ]
        grouped = JobSpec(circuits=texts, shots=100, device="nairobi", layout_groups=(4, 4, 4))
        ((rec, _),) = await sched.submit([grouped])
        await drive(sched, devices)
        await sched.stop()

        def layouts(job_id: str) -> list[tuple[int, ...]]:
            result = decode_result(store.get_blob(store.get(job_id).result_sha256))
            return [tuple(sorted(c.layout)) for c in result.metadata.compile]

        own = [layouts(r.job_id)[0] for r in alone]
        assert len(set(own)) > 1  # alone, they go to different qubits
        assert layouts(rec.job_id) == [own[0]] * 3  # grouped, all on the first's
        # alone, the compiler may replace a layout that needs SWAPs (it has placement's
        # estimate); the shared layout is compiled as given (no estimate is handed on)
        assert all(0 < esp <= 1 for _, esp in asked[:3])
        assert [esp for _, esp in asked[3:]] == [None, None, None]
        assert len({lay for lay, _ in asked[3:]}) == 1
        store.close()

    asyncio.run(main())


def test_layout_groups_are_checked_at_submit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout_groups has 1 entries for 2 circuits"):
        JobSpec(circuits=(ghz(2), ghz(3)), shots=10, layout_groups=(0,))

    async def main() -> None:
        store, _, sched = make(tmp_path)
        await sched.start()
        mixed = JobSpec(circuits=(ghz(2), ghz(3)), shots=10, layout_groups=(0, 0))
        with pytest.raises(ValidationError, match=r"circuits\[1\]: 3 qubits in layout group 0"):
            await sched.submit([mixed])
        assert store.list_jobs() == []
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_bad_jobs_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    async def main() -> None:
        store, _, sched = make(tmp_path)
        await sched.start()
        with pytest.raises(
            PlacementError, match=r"jobs\[1\].*9 qubits.*widest device of this farm, 'nairobi'"
        ):
            await sched.submit([spec(3), spec(9)])
        with pytest.raises(PlacementError, match=r"device='lagos': no such device.*manila"):
            await sched.submit([spec(3, device="lagos")])
        with pytest.raises(ValidationError, match="malformed OpenQASM"):
            await sched.submit([JobSpec(circuits=("OPENQASM 2.0; qreg q[1]; zz q[0];",), shots=1)])
        assert store.list_jobs() == []
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_idempotency_key_reuse(tmp_path: Path, store_url: str) -> None:
    async def main() -> None:
        store, _, sched = make(tmp_path, store_url=store_url)
        await sched.start()
        ((a, c1),) = await sched.submit([spec(idempotency_key="k1")])
        ((b, c2),) = await sched.submit([spec(idempotency_key="k1")])
        assert c1 and not c2 and a.job_id == b.job_id
        with pytest.raises(ValidationError, match="idempotency_key='k1' was already used"):
            await sched.submit([spec(shots=9, idempotency_key="k1")])
        assert len(store.list_jobs()) == 1
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_partial_run_reruns_only_missing_shots(tmp_path: Path, store_url: str) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path, store_url=store_url)
        for d in devices:
            d.faults.partial_fractions = [0.3]
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=1000)])
        await drive(sched, devices)
        done = store.get(rec.job_id)
        assert done.state is S.DONE and done.attempts == 2
        ledger = store.shot_ledger(rec.job_id)
        assert [r.shots for r in ledger] == [300, 700]
        assert len({r.calibration_id for r in ledger}) == 1
        result = decode_result(store.get_blob(done.result_sha256))
        assert sum(result.counts().values()) == 1000
        assert any("partial run" in (e.reason or "") for e in store.events(rec.job_id))
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_recovery_from_every_state_loses_nothing_and_counts_once(
    tmp_path: Path, store_url: str
) -> None:
    """A store left with jobs in every state by a dead runtime is finished by a new one:
    live work runs (once), a POSTPROCESSING job is finished from its ledger without
    running again, and DONE and CANCELLED jobs are left exactly as they were."""

    async def first_life() -> tuple[dict[str, str], dict[str, object]]:
        store, devices, sched = make(tmp_path, store_url=store_url)
        await sched.start()
        ids = {}
        # one job really DONE, one really left POSTPROCESSING (its shots counted)
        ((done, _),) = await sched.submit([spec(shots=400)])
        await drive(sched, devices)
        ids["done"] = done.job_id
        ((post, _),) = await sched.submit([spec(shots=400)])
        await drive_until_postprocessing(sched, devices)
        ids["post"] = post.job_id
        await sched.stop()
        # the rest admitted by a scheduler whose loop never runs, then moved by hand
        idle = Scheduler(store, LocalPorts(devices))
        for state in ("queued", "compiling", "placed", "running", "cancelled"):
            ((rec, _),) = await idle.submit([spec(shots=400)])
            ids[state] = rec.job_id
        t = 10.0
        moves = {
            "compiling": [S.COMPILING],
            "placed": [S.COMPILING, S.PLACED],
            "running": [S.COMPILING, S.PLACED, S.RUNNING],
            "cancelled": [S.CANCELLED],
        }
        for name, path in moves.items():
            prev = S.QUEUED
            for nxt in path:
                store.apply([StateUpdate(ids[name], prev, nxt, t, fields={"attempts": 1})])
                prev = nxt
        assert store.get(ids["post"]).state is S.POSTPROCESSING
        done_rec = store.get(ids["done"])
        before = {
            "result": done_rec.result_sha256,
            "events": len(store.events(ids["done"])),
            "ledger": store.shot_ledger(ids["done"]),
            "post_ledger": store.shot_ledger(ids["post"]),
        }
        store.close()
        return ids, before

    ids, before = asyncio.run(first_life())

    async def second_life() -> None:
        store, devices, sched = make(tmp_path, store_url=store_url)
        recovered = await sched.start()
        assert recovered == 5  # not the DONE or the CANCELLED job
        await drive(sched, devices)
        await sched.stop()
        for name, job_id in ids.items():
            rec = store.get(job_id)
            if name == "cancelled":
                assert rec.state is S.CANCELLED
                assert store.shot_ledger(job_id) == []
                continue
            assert rec.state is S.DONE, (name, rec.state, rec.error)
            ledger = store.shot_ledger(job_id)
            assert sum(r.shots for r in ledger) == 400, (name, ledger)
            assert len({(r.job_id, r.attempt) for r in ledger}) == len(ledger)
        # the DONE job is untouched, the POSTPROCESSING one finished from its ledger
        done = store.get(ids["done"])
        assert done.result_sha256 == before["result"]
        assert len(store.events(ids["done"])) == before["events"]
        assert store.shot_ledger(ids["done"]) == before["ledger"]
        assert store.shot_ledger(ids["post"]) == before["post_ledger"]
        # only the four live jobs ran again: one circuit each
        assert sum(d.circuits_run for d in devices) == 4
        store.close()

    asyncio.run(second_life())


def test_recovery_finishes_postprocessing_from_the_ledger(tmp_path: Path) -> None:
    """A job whose shots were all counted before the crash is finished, not rerun."""

    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=300)])
        # run it, but stop right after its shots are counted, the job POSTPROCESSING
        await drive_until_postprocessing(sched, devices)
        await sched.stop()
        assert store.get(rec.job_id).state is S.POSTPROCESSING
        runs_before = devices[0].circuits_run + devices[1].circuits_run
        store.close()

        store2 = SQLiteJobStore(tmp_path / "jobs.sqlite3")
        devices2 = [Device(d, max_parallel_threads=1) for d in FARM.devices]
        sched2 = Scheduler(store2, LocalPorts(devices2))
        await sched2.start()
        await sched2.stop()
        assert store2.get(rec.job_id).state is S.DONE
        assert devices2[0].circuits_run + devices2[1].circuits_run == 0  # nothing ran again
        assert runs_before == 1
        assert sum(r.shots for r in store2.shot_ledger(rec.job_id)) == 300
        store2.close()

    asyncio.run(main())


def test_recovery_finishes_a_running_job_whose_shots_were_all_counted(tmp_path: Path) -> None:
    """A crash between counting a job's last shots and storing POSTPROCESSING leaves it
    RUNNING with a full ledger: the next life finishes it from the ledger instead of
    asking a device for zero shots (which the simulator answers with no counts)."""

    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=300)])
        await drive_until_crash(sched, devices, "_settle")
        await sched.stop()
        assert store.get(rec.job_id).state is S.RUNNING
        assert sum(r.shots for r in store.shot_ledger(rec.job_id)) == 300
        store.close()

        store2 = SQLiteJobStore(tmp_path / "jobs.sqlite3")
        devices2 = [Device(d, max_parallel_threads=1) for d in FARM.devices]
        sched2 = Scheduler(store2, LocalPorts(devices2))
        await sched2.start()
        await drive(sched2, devices2, until_s=20)
        await sched2.stop()
        done = store2.get(rec.job_id)
        assert done.state is S.DONE, (done.state, done.error)
        assert devices2[0].circuits_run + devices2[1].circuits_run == 0  # nothing ran again
        assert sum(r.shots for r in store2.shot_ledger(rec.job_id)) == 300
        result = decode_result(store2.get_blob(done.result_sha256))
        assert sum(result.counts().values()) == 300
        store2.close()

    asyncio.run(main())


def test_records_are_plain_data() -> None:
    r = JobRecord("j", S.QUEUED, spec(), 1.0, 1.0)
    assert r.tenant == "default"


def test_one_uncompilable_circuit_fails_only_its_job(tmp_path: Path) -> None:
    """Two jobs compiled in one chunk for one device: the one whose circuit does not
    compile fails with the compiler's reason, the other runs."""
    from qrt_ray.compiler import CompiledCircuit

    store, devices, sched = make(tmp_path)
    bad = ghz(3)
    real = sched.ports.compile

    async def compile_failing_one(device: str, texts: list[str], **kw: object) -> object:
        cal_id, out = await real(device, texts, **kw)  # type: ignore[arg-type]
        failed = CompiledCircuit(out[0].circuit_hash, None, 0, None, error="TranspilerError: x")
        return cal_id, [failed if t == bad else c for t, c in zip(texts, out, strict=True)]

    sched.ports.compile = compile_failing_one  # type: ignore[method-assign]

    async def main() -> tuple[str, str]:
        await sched.start()
        (good, _), (broken, _) = await sched.submit(
            [
                spec(2, shots=100, device="manila"),
                JobSpec(circuits=(bad,), shots=100, device="manila"),
            ]
        )
        await drive(sched, devices)
        await sched.stop()
        return good.job_id, broken.job_id

    good, broken = asyncio.run(main())
    assert store.get(good).state is S.DONE
    failed = store.get(broken)
    assert failed.state is S.FAILED
    assert "does not compile for manila: TranspilerError: x" in (failed.error or "")
    store.close()


def test_retries_end_after_max_attempts(tmp_path: Path) -> None:
    from qrt_ray.actors.scheduler import MAX_ATTEMPTS

    async def main() -> None:
        store, devices, sched = make(tmp_path)
        for d in devices:
            d.faults.corrupt = 100  # every payload fails its checksum
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=100)])
        await drive(sched, devices)
        done = store.get(rec.job_id)
        assert done.state is S.FAILED and done.attempts == MAX_ATTEMPTS
        assert "checksum" in done.error and store.shot_ledger(rec.job_id) == []
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_matrix_product_state_calls_run_on_one_thread() -> None:
    # LAPACK called from two threads at once crashed device actors
    from qrt_ray.aer import method_options

    assert method_options("matrix_product_state") == {
        "method": "matrix_product_state",
        "max_parallel_experiments": 1,
        "max_parallel_shots": 1,
    }
    assert method_options("density_matrix") == {"method": "density_matrix"}
    assert method_options(None) == {}


def test_small_noisy_simulations_fuse_gates() -> None:
    from qrt_ray.aer import method_options

    assert method_options("statevector", 9)["fusion_threshold"] == 1
    assert method_options("density_matrix", 6)["fusion_threshold"] == 1
    assert "fusion_threshold" not in method_options("density_matrix", 5)
    assert "fusion_threshold" not in method_options("density_matrix", 9)
    assert "fusion_threshold" not in method_options("matrix_product_state", 20)


def test_fused_and_unfused_jobs_of_a_batch_run_in_their_own_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np
    from qiskit.quantum_info import Statevector

    import qrt_ray.actors.executor as device_mod
    from qrt_ray.workloads import _qft_peak

    calls: list[tuple[int, object]] = []
    real = device_mod.simulate

    def spy(sim: object, circuits: list, **options: object) -> object:
        calls.append((len(circuits), options.get("fusion_threshold")))
        return real(sim, circuits, **options)

    monkeypatch.setattr(device_mod, "simulate", spy)
    device = Device(FARM.devices[1], max_parallel_threads=1)  # nairobi, 7 qubits
    rng = np.random.default_rng(3)
    texts, peaks = [], []
    for n in (6, 3):  # a 6-qubit density matrix fuses, a 3-qubit one does not
        qc = _qft_peak(n, rng)
        probs = Statevector(qc).probabilities_dict()
        peaks.append(max(probs, key=probs.__getitem__))
        qc.measure_all()
        texts.append(to_qasm(qc))
    cal_id, target = device.compile_target()
    out = compile_circuits(texts, target, device="nairobi", calibration_id=cal_id)
    shots = 200
    items = [
        WorkItem(f"j{i}", 1, cal_id, (c.payload,), shots, 0, 7, c.active_qubits)
        for i, c in enumerate(out)
    ]
    runs = {r.job_id: r for r in device.execute(items)}
    assert sorted(calls, key=str) == sorted([(1, 1), (1, None)], key=str)
    for i in range(2):
        assert runs[f"j{i}"].simulator_method == "density_matrix"
        counts = runs[f"j{i}"].counts[0]
        # nairobi's noise leaves the 6-qubit peak about 0.39 of the shots, fused or not
        assert max(counts, key=counts.__getitem__) == peaks[i], (peaks[i], counts)


def test_simulation_method_follows_width_and_shots() -> None:
    from qrt_ray.aer import MPS_MIN_ACTIVE_QUBITS, sim_method_for
    from qrt_ray.compiler import active_qubits

    small, wide = QuantumCircuit(133), QuantumCircuit(133)
    small.cx(0, 1)
    for i in range(MPS_MIN_ACTIVE_QUBITS - 1):
        wide.cx(i, i + 1)
    assert active_qubits(small) == 2 and active_qubits(wide) == MPS_MIN_ACTIVE_QUBITS
    assert sim_method_for(active_qubits(small), 1000) == "density_matrix"
    assert sim_method_for(active_qubits(wide), 1000) == "matrix_product_state"
    assert sim_method_for(10, 1000) == "density_matrix"  # 1024 < 2000
    assert sim_method_for(11, 1000) == "statevector"
    assert sim_method_for(13, 10**6) == "statevector"  # a 13-qubit density matrix is 1 GB


def test_a_batch_mixing_methods_gives_every_job_its_right_answer() -> None:
    """One Aer call holding a statevector circuit before a density-matrix one returned
    wrong counts for the latter (qiskit-aer 0.18.2); the device must never mix them."""
    import numpy as np

    from qrt_ray.actors.device import WorkItem
    from qrt_ray.compiler import compile_circuits
    from qrt_ray.workloads import _qft_peak

    device = Device(FARM.devices[1], max_parallel_threads=1)  # nairobi, 7 qubits
    wide = QuantumCircuit(7)
    wide.h(0)
    for i in range(6):
        wide.cx(i, i + 1)
    wide.t(range(7))  # non-Clifford, so Aer cannot use a stabilizer simulator
    wide.measure_all()
    small = _qft_peak(3, np.random.default_rng(5))  # the Fourier state of 5, read back
    small.measure_all()  # ideally always 101
    cal_id, target = device.compile_target()
    out = compile_circuits(
        [to_qasm(wide), to_qasm(small)], target, device="nairobi", calibration_id=cal_id
    )
    shots = 60  # 2^7 > 2 x 60: the wide one runs as a statevector, the small one as a DM
    items = [
        WorkItem(f"j{i}", 1, cal_id, (c.payload,), shots, 0, 7, c.active_qubits)
        for i, c in enumerate(out)
    ]
    runs = {r.job_id: r for r in device.execute(items)}
    assert runs["j0"].simulator_method == "statevector"
    assert runs["j1"].simulator_method == "density_matrix"
    assert runs["j1"].counts[0].get("101", 0) >= 0.7 * shots, runs["j1"].counts[0]


def test_job_listing_and_batched_results(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        admitted = await sched.submit([spec(2, shots=100), spec(3, shots=100)])
        ids = [rec.job_id for rec, _ in admitted]
        queued = await sched.list_jobs([S.QUEUED, S.COMPILING])
        assert {r.job_id for r in queued} == set(ids)
        with pytest.raises(ValidationError, match="not DONE"):
            await sched.result_blobs(ids)
        await drive(sched, devices)
        assert {r.job_id for r in await sched.list_jobs([S.DONE])} == set(ids)
        blobs = await sched.result_blobs(ids)
        widths = [len(next(iter(decode_result(b).counts()))) for _, b in blobs]
        assert widths == [2, 3]  # in the order asked
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_device_queue_serves_priority_then_ages_low_work_and_shares_between_tenants() -> None:
    now = [1000.0]
    device = Device(FARM.devices[0], max_parallel_threads=1, clock=lambda: now[0])
    device.config = device.config.model_copy(update={"max_batch_circuits": 1})
    cal_id = device.calibration.calibration_id

    def item(job: str, priority: int, tenant: str = "t") -> WorkItem:
        return WorkItem(job, 1, cal_id, (b"",), 10, priority, None, 1, tenant)

    device.enqueue([item("low", 1)])
    now[0] += 10
    device.enqueue([item("high", 9), item("mid", 5)])
    assert [device.take_batch()[0].job_id for _ in range(3)] == ["high", "mid", "low"]
    # Aging: after 9 levels' worth of waiting, the old low-priority job outranks new work.
    device.enqueue([item("old-low", 0)])
    now[0] += 9 * device.scheduling.aging_s_per_level + 1
    device.enqueue([item("new-high", 9)])
    assert device.take_batch()[0].job_id == "old-low"
    device.take_batch()
    # Fair share: equal priority, the tenant served less goes first, not the flood's head.
    device.enqueue([item(f"flood{i}", 5, "big") for i in range(5)])
    device.take_batch()  # big has now had shots here
    now[0] += 1
    device.enqueue([item("rare", 5, "small")])
    assert device.take_batch()[0].job_id == "rare"


def test_device_queue_follows_the_scheduling_config() -> None:
    device = Device(
        FARM.devices[0],
        max_parallel_threads=1,
        clock=lambda: 0.0,
        scheduling=SchedulingConfig(fair_share=False),
    )
    device.config = device.config.model_copy(update={"max_batch_circuits": 1})
    cal_id = device.calibration.calibration_id
    device.enqueue(
        [WorkItem(f"flood{i}", 1, cal_id, (b"",), 10, 5, None, 1, "big") for i in range(3)]
    )
    device.take_batch()
    device.enqueue([WorkItem("rare", 1, cal_id, (b"",), 10, 5, None, 1, "small")])
    # Without fair share, arrival order rules: the flood's next job, not the newcomer.
    assert device.take_batch()[0].job_id == "flood1"


def test_warm_jobs_go_to_the_device_together_cold_ones_in_growing_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qrt_ray.actors.scheduler as scheduler_mod

    monkeypatch.setattr(scheduler_mod, "PASS_BUDGET_S", 10.0)  # each submit: one pass

    async def main() -> None:
        store, devices, sched = make(tmp_path)
        hand_offs: list[int] = []
        enqueue = sched.ports.enqueue

        async def counted(device: str, items: list) -> None:
            hand_offs.append(len(items))
            await enqueue(device, items)

        sched.ports.enqueue = counted  # type: ignore[method-assign]
        await sched.start()
        # 40 distinct circuits: cold, in chunks of 16, 32, ... (the first starts soon)
        texts = [ghz(2).replace("h q[0];", f"rz({i + 1}) q[0];\nh q[0];") for i in range(40)]
        cold = [
            JobSpec(circuits=(t,), shots=20, seed=i, device="manila") for i, t in enumerate(texts)
        ]
        await sched.submit(cold)
        await drive(sched, devices)
        assert len(hand_offs) >= 2 and min(hand_offs) <= FIRST_CHUNK and sum(hand_offs) == 40
        # the same circuits again: every one is compiled already, one hand-off
        hand_offs.clear()
        await sched.submit([s.model_copy(update={"seed": 100 + i}) for i, s in enumerate(cold)])
        await drive(sched, devices)
        await sched.stop()
        assert hand_offs == [40]
        store.close()

    asyncio.run(main())


def test_compile_chunks_start_small_and_double_up_to_the_configured_size() -> None:
    caps = [chunk_cap(i, 64) for i in range(5)]
    assert caps[0] == FIRST_CHUNK < 64
    assert caps == sorted(caps) and caps[-1] == 64
    assert all(b in (2 * a, 64) for a, b in itertools.pairwise(caps))
    assert chunk_cap(0, 4) == 4  # never above the configured size
    assert chunk_cap(10**6, 64) == 64  # no overflow far down a long pass


def test_matrix_product_state_calls_never_overlap_within_a_process() -> None:
    # a batch on the worker thread beside a readout calibration on an actor thread:
    # two MPS calls at once crashed a device in LAPACK; other methods may overlap
    import threading

    from qrt_ray.aer import simulate

    class Recording:
        """A simulator whose first call waits inside for a second one to come in."""

        def __init__(self, wait_s: float) -> None:
            self.wait_s = wait_s
            self.first_inside = threading.Event()
            self.second_inside = threading.Event()
            self.calls = 0
            self.overlap = False
            self.lock = threading.Lock()

        def run(self, circuits: object, **options: object) -> Recording:
            with self.lock:
                self.calls += 1
                first = self.calls == 1
            if first:
                self.first_inside.set()
                # overlap is seen the moment the second call arrives; serialized
                # calls never arrive while this one is inside, however long it waits
                self.overlap = self.second_inside.wait(self.wait_s)
            else:
                self.second_inside.set()
            return self

        def result(self) -> Recording:
            return self

    def overlapped(method: str, wait_s: float) -> bool:
        sim = Recording(wait_s)
        one = threading.Thread(target=simulate, args=(sim, []), kwargs={"method": method})
        two = threading.Thread(target=simulate, args=(sim, []), kwargs={"method": method})
        one.start()
        assert sim.first_inside.wait(30)
        two.start()  # only once the first call is inside the simulator
        one.join()
        two.join()
        assert sim.calls == 2
        return sim.overlap

    assert not overlapped("matrix_product_state", wait_s=0.5)
    assert overlapped("statevector", wait_s=30)


def test_a_device_busy_in_a_batch_that_misses_snapshots_keeps_its_queued_work(
    tmp_path: Path,
) -> None:
    # A simulator call holds the GIL, so a device actor in a long batch misses
    # snapshots; its queued work stays put (the hung-batch watchdog judges it), while
    # a silent device with no batch in flight still goes UNREACHABLE.
    store, devices, sched = make(tmp_path)
    real = sched.ports.snapshots
    silent: set[str] = set()

    async def answering() -> list:  # type: ignore[type-arg]
        return [s for s in await real() if s.name not in silent]

    sched.ports.snapshots = answering  # type: ignore[method-assign]

    async def main() -> None:
        await sched.start()
        admitted = await sched.submit([spec(shots=100, device="manila") for _ in range(2)])
        ids = [rec.job_id for rec, _ in admitted]
        manila = next(d for d in devices if d.name == "manila")
        manila.config = manila.config.model_copy(update={"max_batch_circuits": 1})
        while manila.queue_depth < 2:
            await asyncio.sleep(0.02)
        batch = manila.take_batch()  # one job starts; the other waits queued
        (other,) = set(ids) - {i.job_id for i in batch}
        await sched.batch_started("manila", *manila.claim(batch))
        silent.add("manila")
        await sched._refresh_snapshots(force=True)
        waiting = store.get(other)
        assert waiting.state is JobState.PLACED and waiting.attempts == 1
        assert all("UNREACHABLE" not in (e.reason or "") for e in store.events(other))
        await sched.batch_finished("manila", manila.execute(batch))
        silent.clear()
        await drive(sched, devices)
        assert [store.get(j).state for j in ids] == [JobState.DONE] * 2
        assert store.get(other).attempts == 1
        # no batch in flight: a device that stops answering takes no new work
        silent.add("nairobi")
        await sched._refresh_snapshots(force=True)
        nairobi = next(s for s in sched.view.snapshots if s.name == "nairobi")
        assert nairobi.status.value == "UNREACHABLE"
        await sched.stop()
        store.close()

    asyncio.run(asyncio.wait_for(main(), 120))  # a regression fails, never hangs


@pytest.mark.parametrize(("target_s", "calls"), [(0.5, [(20, 50)]), (1e-6, [(1, 50)] * 20)])
def test_a_batch_runs_in_calls_of_about_the_piece_target(
    monkeypatch: pytest.MonkeyPatch, target_s: float, calls: list[tuple[int, int]]
) -> None:
    # every simulator call pays for the noise model's hand-over: small circuits share
    # one call; work predicted past the target runs a circuit a call (and splits a
    # trajectory's shots where they cost more than the call: see test_simtime)
    import qrt_ray.actors.executor as device_mod

    monkeypatch.setattr(device_mod, "PIECE_TARGET_S", target_s)
    monkeypatch.setattr(device_mod, "sim_method_for", lambda qubits, shots: "statevector")
    sizes: list[tuple[int, int]] = []
    real = device_mod.simulate

    def spy(sim: object, circuits: list, **options: object) -> object:
        sizes.append((len(circuits), int(options["shots"])))  # type: ignore[call-overload]
        return real(sim, circuits, **options)

    monkeypatch.setattr(device_mod, "simulate", spy)
    device = Device(FARM.devices[0], max_parallel_threads=1)  # manila
    cal_id, target = device.compile_target()
    out = compile_circuits([ghz(3)] * 20, target, device="manila", calibration_id=cal_id)
    item = WorkItem("j", 1, cal_id, tuple(c.payload for c in out), 50, 0, 5, 3)
    (run,) = device.execute([item])
    assert sizes == calls
    assert len(run.counts) == 20 and all(sum(c.values()) == 50 for c in run.counts)
    # the plan comes from the prior alone: the same seed gives the same counts
    (again,) = device.execute([item])
    assert again.counts == run.counts


def test_a_placement_pass_over_its_budget_dispatches_what_it_placed_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first jobs of a large submission compile while later ones are still placed
    import qrt_ray.actors.scheduler as scheduler_mod

    monkeypatch.setattr(scheduler_mod, "PASS_BUDGET_S", 0.0)

    async def main() -> None:
        store, devices, sched = make(tmp_path)
        admitted = await sched.submit([spec(n, shots=100, device="manila") for n in (2, 3, 4)])
        ids = [rec.job_id for rec, _ in admitted]
        sched._wake.clear()
        await sched._place_pending()  # the pass stops after its first job
        states = [sched._jobs[j].state for j in ids]
        assert states.count(S.COMPILING) == 1 and states.count(S.QUEUED) == 2
        assert sched._wake.is_set()  # and asks for the next pass at once
        await sched.start()
        await drive(sched, devices)
        assert all(store.get(j).state is S.DONE for j in ids)
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_a_failed_hand_off_does_not_spend_an_attempt(tmp_path: Path) -> None:
    """A device that is restarting refuses every hand-off for a while; its jobs go
    back to placement each time without using up their attempts, and run once it
    takes work again."""
    from qrt_ray.errors import DeviceUnavailableError

    async def main() -> None:
        store, devices, sched = make(tmp_path)
        refusals = {"left": 7}  # more than MAX_ATTEMPTS hand-offs fail
        real = sched.ports.enqueue

        async def restarting(device: str, items: list[WorkItem]) -> None:
            if refusals["left"] > 0:
                refusals["left"] -= 1
                raise DeviceUnavailableError(f"device {device} is restarting")
            await real(device, items)

        sched.ports.enqueue = restarting  # type: ignore[method-assign]
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=300, device="manila")])
        await drive(sched, devices, until_s=120)
        await sched.stop()
        done = store.get(rec.job_id)
        assert refusals["left"] == 0
        assert done.state is S.DONE, done.error
        assert done.attempts == 1  # seven refused hand-offs, one attempt that ran
        reasons = [e.reason or "" for e in store.events(rec.job_id)]
        assert sum("restarting" in r for r in reasons) == 7
        store.close()

    asyncio.run(main())


def test_compile_info_and_recovery_notes_of_older_records_are_still_read() -> None:
    from qrt_ray.actors.scheduler import _compile_info, _recovery_note

    old = JobRecord(
        "j",
        S.RUNNING,
        spec(),
        1.0,
        1.0,
        placement={"compile": [{"layout": [0, 1]}], "runs_from_attempt": 3, "discarded_shots": 9},
    )
    assert _compile_info(old) == [{"layout": [0, 1]}]
    assert _recovery_note(old)["runs_from_attempt"] == 3
    new = JobRecord(
        "j",
        S.RUNNING,
        spec(),
        1.0,
        1.0,
        placement={"device": "manila"},
        compile_info=[{"layout": [2]}],
        recovery={"runs_from_attempt": 2, "discarded_shots": 4},
    )
    assert _compile_info(new) == [{"layout": [2]}]
    assert _recovery_note(new) == {"runs_from_attempt": 2, "discarded_shots": 4}


def test_a_waiting_job_says_why_until_it_is_placed(tmp_path: Path) -> None:
    """A job pinned to a device in maintenance waits, and says which device is in what
    state and why; once the device is back it is placed and no longer waiting."""
    from qrt_ray.models import DeviceStatus

    async def main() -> None:
        store, devices, sched = make(tmp_path)
        manila = next(d for d in devices if d.name == "manila")
        manila.set_status(DeviceStatus.MAINTENANCE, "maintenance window until 14:00: fridge")
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=100, device="manila")])
        await sched._refresh_snapshots(force=True)
        await sched._place_pending()
        why = sched.waiting(rec.job_id)
        assert why is not None and "manila=MAINTENANCE" in why and "fridge" in why
        assert (await sched.get(rec.job_id)).state is S.QUEUED
        manila.set_status(DeviceStatus.ONLINE)
        await drive(sched, devices, until_s=60, done=lambda: store.get(rec.job_id).state.is_final)
        await sched.stop()
        assert store.get(rec.job_id).state is S.DONE
        assert sched.waiting(rec.job_id) is None
        store.close()

    asyncio.run(main())


def test_a_placed_job_says_its_place_and_when_it_should_start(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        admitted = await sched.submit([spec(shots=100, device="manila") for _ in range(3)])
        ids = [rec.job_id for rec, _ in admitted]
        for _ in range(100):  # placed and compiled; no device runs anything yet
            if all(sched._jobs[j].state is S.PLACED for j in ids):
                break
            await asyncio.sleep(0.05)
        first, last = sched.waiting(ids[0]), sched.waiting(ids[-1])
        assert first is not None and first.startswith("on manila: 0 job(s) placed ahead")
        assert last is not None and "2 job(s) placed ahead" in last
        expected = sum(sched._jobs[j].expected.run_s for j in ids[:2])  # type: ignore[union-attr]
        assert f"about {expected:.1f} s" in last
        await drive(sched, devices)
        await sched.stop()
        assert all(sched.waiting(j) is None for j in ids)
        store.close()

    asyncio.run(main())


def test_jobs_of_one_call_are_listed_and_queued_in_the_order_they_were_given(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store, _, sched = make(tmp_path)
        await sched.start()
        admitted = await sched.submit([spec(shots=10 + i) for i in range(12)])
        await sched.stop()
        ids = [rec.job_id for rec, _ in admitted]
        listed = [r.job_id for r in store.list_jobs(limit=12)]
        assert listed == ids[::-1]  # newest first
        store.close()

    asyncio.run(main())


def test_devices_say_what_runs_there_even_when_the_device_cannot_answer(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store, _, sched = make(tmp_path)
        now = sched._clock()
        sched.view.watch.started("manila", ["job-a", "job-b"], 1.0, now - 30.0)
        snaps = {s.name: s for s in await sched.devices()}
        assert snaps["manila"].running_jobs == 2
        assert 29.0 <= (snaps["manila"].running_s or 0) <= 60.0
        assert snaps["nairobi"].running_jobs == 0 and snaps["nairobi"].running_s is None
        store.close()

    asyncio.run(main())


def test_a_run_reported_after_the_jobs_deadline_fails_it_and_counts_nothing(
    tmp_path: Path,
) -> None:
    now = [1_000_000.0]

    async def main() -> None:
        store, devices, sched = make(tmp_path, clock=lambda: now[0])
        await sched.start()
        job = spec(shots=300, device="manila", max_execution_time_s=5)
        ((rec, _),) = await sched.submit([job])
        manila = next(d for d in devices if d.name == "manila")
        for _ in range(600):  # placed, compiled and handed off by the loop
            if len(manila.queue):
                break
            await asyncio.sleep(0.05)
        assert len(manila.queue), store.get(rec.job_id).state
        # the loop is held up (a long pass) while the run outlives the deadline
        await sched.stop()
        now[0] += 60
        await drive(sched, devices, until_s=5)
        done = store.get(rec.job_id)
        assert done.state is S.FAILED, done.state
        assert "max_execution_time_s=5 exceeded" in (done.error or "")
        assert store.shot_ledger(rec.job_id) == []

    asyncio.run(main())


def test_a_job_whose_shots_the_farm_dropped_is_handed_off_unsliced(tmp_path: Path) -> None:
    """A job rerun whole (its earlier shots dropped) goes to its device as ``whole``, so
    a recalibration between slices cannot cut it again; the others still slice."""

    async def main() -> None:
        store, devices, sched = make(tmp_path, scheduling=SchedulingConfig(slice_shots=400))
        handed: list[WorkItem] = []
        for d in devices:
            real = d.enqueue

            def enqueue(items: object, real: object = real) -> int:
                items = list(items)  # type: ignore[call-overload]
                handed.extend(items)
                return real(items)  # type: ignore[operator]

            d.enqueue = enqueue  # type: ignore[method-assign]
        await sched.start()
        (dropped, _), (fresh, _) = await sched.submit([spec(shots=1000), spec(shots=1000)])
        # as a placement to rerun it whole leaves it (policies.jobflow: Placed)
        sched._jobs[dropped.job_id].discarded_shots = 300
        await drive(sched, devices)
        mine = {
            rec.job_id: [w for w in handed if w.job_id == rec.job_id] for rec in (dropped, fresh)
        }
        assert [(w.shots, w.whole) for w in mine[dropped.job_id]] == [(1000, True)]
        assert [(w.shots, w.whole) for w in mine[fresh.job_id]] == [(1000, False)]
        assert store.get(dropped.job_id).state is S.DONE
        ledger = store.shot_ledger(dropped.job_id)
        assert [r.shots for r in ledger] == [1000]  # one run, not three slices
        assert len(store.shot_ledger(fresh.job_id)) == 3  # 400 + 400 + 200
        await sched.stop()
        store.close()

    asyncio.run(main())


class _SilentPorts(LocalPorts):
    """Devices that do not answer the scheduler's polls while they are ``silent``
    (building their noise model, or running a batch that holds the interpreter)."""

    def __init__(self, devices: list[Device]) -> None:
        super().__init__(devices)
        self.silent = set(self.devices)

    async def snapshots(self):  # type: ignore[no-untyped-def]
        return [s for s in await super().snapshots() if s.name not in self.silent]


def test_devices_not_heard_from_yet_make_a_job_wait_not_fail(tmp_path: Path) -> None:
    """A scheduler that (re)starts while its devices do not answer neither refuses a
    submit as if the farm had no devices nor fails a job it recovers: the submit is
    told to retry soon, the recovered job waits; once they answer, both are judged."""

    async def main() -> None:
        store, devices, first = make(tmp_path)
        ((kept, _),) = await first.submit([spec(shots=100, device="manila")])  # stored
        ports = _SilentPorts(devices)
        sched = Scheduler(store, ports, report_key=REPORT_KEY)
        await sched.start()  # recovers the QUEUED job
        with pytest.raises(FarmBusyError, match="2 of the farm's 2 devices have not answered"):
            await sched.submit([spec(shots=100)])
        with pytest.raises(FarmBusyError) as busy:
            await sched.estimate(spec(shots=100))
        assert busy.value.limit == "devices_unheard" and busy.value.retry_after_s > 0
        assert [r.job_id for r in store.list_jobs()] == [kept.job_id]  # nothing stored
        await sched._refresh_snapshots(force=True)
        await sched._place_pending()
        assert (await sched.get(kept.job_id)).state is S.QUEUED  # not failed
        why = str(sched.waiting(kept.job_id))
        assert "have not answered" in why and "retry" not in why
        ports.silent = {"nairobi"}  # manila answers: a job it cannot take may fit nairobi
        with pytest.raises(FarmBusyError, match=r"\(nairobi: starting"):
            await sched.submit([spec(shots=100, device="nope")])
        # pinned to a device that answered, a job is judged on that device alone
        with pytest.raises(PlacementError, match="'manila', has 5"):
            await sched.submit([spec(7, shots=100, device="manila")])
        # a device silent for as long as the watchdog waits on a known one is absent
        sched._started_at -= sched.view.faults.silent_restart_s
        with pytest.raises(PlacementError, match="device='nope': no such device"):
            await sched.submit([spec(shots=100, device="nope")])
        ports.silent = set()
        await drive(sched, devices, until_s=60, done=lambda: store.get(kept.job_id).state.is_final)
        await sched.stop()
        assert store.get(kept.job_id).state is S.DONE
        store.close()

    asyncio.run(main())
