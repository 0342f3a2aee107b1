"""A job's stage waterfall from its stored transitions (``qrt trace JOB``).

The store records every transition with its time, so a job's trace can be drawn with
no tracing backend: each stay in a state is a stage (the names the stage histogram
and the spans use), and a job that went back to the queue shows each visit.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qrt_ray.metrics import END_TO_END, STAGES
from qrt_ray.render import table

BAR_WIDTH = 40


@dataclass(frozen=True, slots=True)
class Stage:
    """One stay of a job in one state (seconds since the job was submitted)."""

    name: str
    start_s: float
    end_s: float
    detail: str

    @property
    def duration_s(self) -> float:
        """How long the stay lasted."""
        return self.end_s - self.start_s


def stages(events: Sequence[Mapping[str, Any]]) -> list[Stage]:
    """The stages of a job from its transitions (dicts with ``at``, ``to`` and
    ``reason``, oldest first); a job still in a state has no stage for it yet."""
    if not events:
        return []
    t0 = float(events[0]["at"])
    out = []
    for a, b in itertools.pairwise(events):
        name = STAGES.get(str(a["to"]), str(a["to"]).lower())
        reason = str(b.get("reason") or "")
        out.append(Stage(name, float(a["at"]) - t0, float(b["at"]) - t0, reason))
    last = events[-1]
    if str(last["to"]) == "DONE":
        out.append(Stage(END_TO_END, 0.0, float(last["at"]) - t0, "submission to DONE"))
    return out


def render(job_id: str, state: str, found: Sequence[Stage], trace_id: str) -> str:
    """The waterfall as text: one bar per stage on the job's time line."""
    head = f"job {job_id}: {state}  trace {trace_id}"
    if not found:
        return head + "\nno stage finished yet"
    total = max(s.end_s for s in found) or 1e-9
    rows = []
    for s in found:
        first = round(s.start_s / total * BAR_WIDTH)
        width = max(1, round(s.duration_s / total * BAR_WIDTH))
        bar = " " * first + "#" * min(width, BAR_WIDTH - first or 1)
        rows.append([s.name, _ms(s.start_s), _ms(s.duration_s), f"|{bar:<{BAR_WIDTH}}|", s.detail])
    return head + "\n" + table(["stage", "start", "took", "", "then"], rows)


def _ms(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"
