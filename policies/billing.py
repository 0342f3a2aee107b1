"""What a finished job is billed: the rule, as one pure function.

The rule (docs/billing.md says it for users):

* **Shots**: every shot a device ran for the job that the job's result uses,
  times the job's circuits, at that device's ``price_per_shot_usd``. Shots the farm
  itself threw away (a run cut short by a lost device, runs of an old calibration
  when the job was rerun whole) are the farm's loss and are not billed, so a
  retry never bills a shot twice.
* **Fee**: the device's ``price_per_job_usd``, once per job that ran at least one
  shot, on the device that ran most of them.
* **Failed and cancelled jobs** pay the same rule for what ran before the end; a
  job that never ran a shot pays nothing.
* **Mitigation overhead**: mitigation circuits a primitive adds (twirls, noise
  factors) are circuits of its jobs and billed as above; readout calibrations
  measured for a tenant through the gateway are billed as ``mitigation`` lines.
* **Calibration overhead** (canaries, recalibrations) is the farm's: it is priced
  into ``price_per_shot_usd`` and never billed to a tenant directly.

Device seconds are the simulator seconds of the billed runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qrt_ray.results import RawRun, shots_executed
from qrt_ray.store.base import Charge

# (price per shot, price per job) of each device, in USD
Prices = Mapping[str, tuple[float, float]]


def job_charges(
    job_id: str,
    tenant: str,
    circuits: int,
    runs: Sequence[RawRun],
    prices: Prices,
    at: float,
) -> list[Charge]:
    """The ledger lines of a job that has just become final (empty: nothing ran).

    Args:
        circuits: circuits in the job (each run ran every one of them).
        runs: the runs the job's result uses (each counted once in the shot ledger).
        prices: per device; a device missing here bills at 0 (and says so in the
            line's device name being kept: the bill shows it).
    """
    shots: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for run in runs:
        n = shots_executed(run)
        if n <= 0:
            continue
        shots[run.device] = shots.get(run.device, 0) + n
        seconds[run.device] = seconds.get(run.device, 0.0) + max(0.0, run.run_s)
    if not shots:
        return []
    lines = []
    for line, device in enumerate(sorted(shots), start=1):
        per_shot = prices.get(device, (0.0, 0.0))[0]
        n = shots[device] * circuits
        lines.append(
            Charge(job_id, line, tenant, device, "shots", n, seconds[device], n * per_shot, at)
        )
    main = max(sorted(shots), key=lambda d: shots[d])
    fee = prices.get(main, (0.0, 0.0))[1]
    lines.append(Charge(job_id, 0, tenant, main, "fee", 0, 0.0, fee, at))
    return lines


def upper_bound_usd(shots: int, circuits: int, prices: Prices, device: str | None) -> float:
    """The most a job can be billed (what a budget holds while it is not final): on
    ``device`` if it is pinned; else every shot at the dearest price per shot and the
    dearest fee (its shots may run on several devices, its fee on any).

    Raises:
        ValueError: no price is known (no device has answered yet).
    """
    chosen = [prices[device]] if device in prices else list(prices.values())
    if not chosen:
        raise ValueError("no device's price is known yet")
    per_shot = max(p for p, _ in chosen)
    return max(f for _, f in chosen) + shots * circuits * per_shot


def readout_charge(
    job_id: str, tenant: str, device: str, shots: int, prices: Prices, at: float
) -> Charge:
    """The ledger line of a readout calibration measured for a tenant."""
    per_shot = prices.get(device, (0.0, 0.0))[0]
    return Charge(job_id, 1, tenant, device, "mitigation", shots, 0.0, shots * per_shot, at)
