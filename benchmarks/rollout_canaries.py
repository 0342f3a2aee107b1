"""How far a candidate post-processing version lands from the served one on canaries.

Runs canary rounds on real in-process devices (Aer with each backend's noise, no Ray)
with a rollout of each candidate in shadow, and prints per device and candidate the
canaries compared, the largest and mean gap to version 1 as the rollout judges it
(``qrt_ray.policies.rollout.gap``), the largest plain difference, and where
the rollout ended (``rollout.max_divergence`` is 0.05 by default). Promotion is held
off here, so the gaps of every round are seen. ``manila-drifting`` drifts as the
integration tests' farm does (an hour a second, errors up 30 % an hour), with a
canary round every 3 s: rounds that found drift judge nothing and are left out.

    python benchmarks/rollout_canaries.py                 # about a minute
    python benchmarks/rollout_canaries.py --rounds 10 --candidates 2
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' drifting farm

from qrt_ray.actors.calibration import CalibrationManager, LocalCalibrationPorts
from qrt_ray.actors.device import Device
from qrt_ray.actors.rollouts import Rollouts
from qrt_ray.config import (
    CalibrationConfig,
    DeviceConfig,
    DriftConfig,
    RolloutConfig,
    load_farm_config_text,
)
from qrt_ray.mitigation.pipelines import shadow_key
from qrt_ray.policies.rollout import gap
from qrt_ray.render import table
from qrt_ray.store import open_store
from tests.circuits import DRIFTING_FARM

# name -> (backend, drift, seconds between canary rounds)
DEVICES: dict[str, tuple[str, DriftConfig | None, float]] = {
    "nairobi": ("FakeNairobiV2", None, 61.0),
    "manila": ("FakeManilaV2", None, 61.0),
    # the integration tests' drifting manila, its drift taken from that farm
    "manila-drifting": ("FakeManilaV2", load_farm_config_text(DRIFTING_FARM).devices[0].drift, 3.1),
}


class Clock:
    """Simulated time: a canary round is due every step."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def gaps_of(name: str, candidate: str, rounds: int, folder: Path) -> list[object]:
    """One device's canary rounds with ``candidate`` in shadow: a table row."""
    backend, drift, period_s = DEVICES[name]
    clock = Clock()
    device = Device(
        DeviceConfig(
            name=name, backend=backend, price_per_shot_usd=0, price_per_job_usd=0, drift=drift
        ),
        clock=clock,
    )
    store = open_store(folder / f"{name}-{candidate}.sqlite3")
    book = Rollouts(store, RolloutConfig(promote_after_rounds=10_000, min_canaries=1), clock=clock)
    book.load()
    manager = CalibrationManager(
        store,
        LocalCalibrationPorts([device]),
        CalibrationConfig(canary_period_s=period_s - 0.1, canary_shots=2000, max_chains=4),
        clock=clock,
        seed=5,
        versions=book.canary_versions,
    )
    key = shadow_key("readout", candidate)
    gaps: list[float] = []
    plain: list[float] = []

    async def run() -> None:
        await book.start("readout", candidate)
        seen = 0
        for _ in range(rounds + 1):  # the first pass only meets the device
            await manager.step()
            records = store.canaries(name, 1000)
            for record in reversed(records[: len(records) - seen]):
                for canary in [] if record.drifted else record.detail["canaries"]:
                    values = canary["mitigated"]
                    served, shadow = values.get("readout"), values.get(key)
                    if _number(served) and _number(shadow):
                        gaps.append(gap(served, shadow))
                        plain.append(abs(served - shadow))
                await book.observe(record)
            seen = len(records)
            clock.t += period_s

    asyncio.run(run())
    store.close()
    phase = book.view()[0]["phase"]
    if not gaps:
        return [name, candidate, 0, "-", "-", "-", phase]
    mean = sum(gaps) / len(gaps)
    return [
        name,
        candidate,
        len(gaps),
        f"{max(gaps):.4f}",
        f"{mean:.4f}",
        f"{max(plain):.4f}",
        phase,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="canary rounds per device")
    parser.add_argument(
        "--candidates", nargs="+", default=["2", "drill-overcorrect"], help="versions to try"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            gaps_of(name, candidate, args.rounds, Path(tmp))
            for name in DEVICES
            for candidate in args.candidates
        ]
    head = ["device", "candidate", "canaries", "largest gap", "mean gap", "largest plain gap"]
    print(table([*head, "ended"], rows))


if __name__ == "__main__":
    main()
