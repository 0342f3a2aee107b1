"""Pictures of results, calibration drift and the demo, for people who would rather look.

* :func:`result_figure`: a job's outcome histogram (the most frequent outcomes, and how
  many more there are), from ``JobResult.plot()`` or ``qrt plot result JOB``;
* :func:`drift_figure`: a device's calibrations over time (mean T1, readout and
  two-qubit error) with the canary rounds' measured against predicted success, from
  ``qrt plot drift DEVICE``;
* :func:`demo_report_html`: ``qrt demo --report report.html``, one self-contained page
  with the demo's tables and charts (inline SVG).

matplotlib draws them (the ``plot`` extra: ``pip install 'qrt-ray[plot]'``); it is
imported only here, and only when a picture is asked for.
"""

from __future__ import annotations

import html
import io
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qrt_ray.errors import QrtError, ValidationError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from qrt_ray.models import JobResult

# outcomes a histogram shows by default (the rest are counted in its title)
TOP_OUTCOMES = 24
_FORMATS = (".png", ".svg", ".pdf")


def _figure_class() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never a window, never a display
        from matplotlib.figure import Figure
    except ImportError:
        raise QrtError(
            "pictures need matplotlib: pip install 'qrt-ray[plot]' (or pip install matplotlib)"
        ) from None
    return Figure


def check_output(path: str | Path) -> Path:
    """``path`` as a picture file name (.png, .svg or .pdf).

    Raises:
        ValidationError: another suffix, or a folder that does not exist.
    """
    out = Path(path)
    if out.suffix.lower() not in _FORMATS:
        raise ValidationError(
            f"--out {str(path)!r}: name a .png, .svg or .pdf file, e.g. result.png"
        )
    if not out.parent.is_dir():
        raise ValidationError(f"--out {str(path)!r}: the folder {str(out.parent)!r} does not exist")
    return out


def result_figure(result: JobResult, circuit: int = 0, top: int = TOP_OUTCOMES) -> Figure:
    """A bar chart of circuit ``circuit``'s most frequent outcomes.

    Raises:
        ValidationError: no such circuit in the result.
    """
    if not 0 <= circuit < len(result.circuits):
        raise ValidationError(
            f"circuit={circuit}: the job has circuits 0 to {len(result.circuits) - 1}"
        )
    counts = result.counts(circuit)
    shots = sum(counts.values())
    shown = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    hidden = len(counts) - len(shown)
    figure = _figure_class()(figsize=(max(6.0, 0.35 * len(shown) + 2), 4.2), layout="constrained")
    ax = figure.add_subplot()
    labels = [k for k, _ in shown]
    ax.bar(range(len(shown)), [v / shots for _, v in shown], color="#3a6ea5")
    ax.set_xticks(range(len(shown)), labels, rotation=60 if len(labels[0]) > 3 else 0,
                  fontsize=8, family="monospace")  # fmt: skip
    ax.set_ylabel("probability")
    meta = result.metadata
    title = f"job {meta.job_id}: {shots} shots on {meta.device} ({meta.calibration_id})"
    if hidden:
        title += f"\n{len(shown)} most frequent of {len(counts)} outcomes; {hidden} more not shown"
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return figure


def drift_figure(device: str, history: Sequence[Mapping[str, Any]]) -> Figure:
    """A device's calibrations over time, oldest left, and the last canary of each.

    Raises:
        ValidationError: no calibration in ``history``.
    """
    if not history:
        raise ValidationError(f"device {device!r}: no calibration history to draw")
    rows = sorted(history, key=lambda h: h["taken_at"])
    when = [_hours(h["taken_at"], rows[0]["taken_at"]) for h in rows]
    figure = _figure_class()(figsize=(8, 6.5), layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    series = [
        ("mean T1 (us)", [h["mean_t1_us"] for h in rows], "#3a6ea5"),
        ("mean readout error", [h["mean_readout_error"] for h in rows], "#c0504d"),
        ("mean 2-qubit error", [h["mean_2q_error"] for h in rows], "#9a7d0a"),
    ]
    for ax, (label, values, color) in zip(axes, series, strict=True):
        points = [(t, v) for t, v in zip(when, values, strict=True) if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", color=color)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    canaries = [(t, h["last_canary"]) for t, h in zip(when, rows, strict=True) if h["last_canary"]]
    if canaries:
        twin = axes[2].twinx()
        twin.plot([t for t, _ in canaries], [c[1] for _, c in canaries], "s", color="#4f8f4f",
                  label="canary measured")  # fmt: skip
        twin.plot([t for t, _ in canaries], [c[0] for _, c in canaries], "x", color="#4f8f4f",
                  label="canary predicted")  # fmt: skip
        twin.set_ylabel("canary success", fontsize=8)
        twin.legend(fontsize=7, loc="lower right")
    axes[-1].set_xlabel(f"hours since the first calibration shown ({_stamp(rows[0]['taken_at'])})")
    axes[0].set_title(f"{device}: {len(rows)} calibrations", fontsize=10)
    return figure


def save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` (the suffix picks the format); returns the path."""
    out = check_output(path)
    figure.savefig(out, dpi=120)
    return out


def svg(figure: Figure) -> str:
    """``figure`` as inline SVG markup."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def demo_report_html(report: Mapping[str, Any], summary: str) -> str:
    """The demo's report as one self-contained HTML page: totals, the per-family
    table, and charts of latency, fidelity and where the jobs ran."""
    rows = report["rows"]
    families = sorted({r.family for r in rows})
    latency = [statistics.median([r.latency_s for r in rows if r.family == f]) for f in families]
    fidelity = [
        statistics.fmean([r.fidelity for r in rows if r.family == f and r.fidelity is not None])
        if any(r.fidelity is not None for r in rows if r.family == f)
        else 0.0
        for f in families
    ]
    devices = Counter(r.device or "-" for r in rows)
    Figure = _figure_class()
    charts = []
    for title, labels, values, ylabel, color in (
        ("median latency per family", families, latency, "seconds", "#3a6ea5"),
        ("mean Hellinger fidelity per family", families, fidelity, "fidelity", "#4f8f4f"),
        ("jobs per device", list(devices), list(devices.values()), "jobs", "#9a7d0a"),
    ):
        figure = Figure(figsize=(5.2, 3.4), layout="constrained")
        ax = figure.add_subplot()
        ax.bar(labels, values, color=color)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        charts.append(
            f"<figure>{svg(figure)}<figcaption>{html.escape(title)}</figcaption></figure>"
        )
    table_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in (
            [
                r.name, r.family, r.num_qubits, r.state, r.device or "-", f"{r.latency_s:.1f}",
                "-" if r.fidelity is None else f"{r.fidelity:.3f}",
            ]
            for r in rows
        )
    )  # fmt: skip
    head = "".join(
        f"<th>{h}</th>"
        for h in ("job", "family", "qubits", "state", "device", "latency s", "fidelity")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qrt demo report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
pre {{ background: #f4f4f4; padding: 1em; overflow-x: auto; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }} figcaption {{ font-size: 0.8em; color: #555; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
</style></head><body>
<h1>qrt demo report</h1>
<p>{report["done"]} of {report["jobs"]} jobs done in {report["elapsed_s"]:.1f} s
({report["shots"]} shots each), made {_stamp(time.time())}.</p>
<pre>{html.escape(summary)}</pre>
<div class="charts">{"".join(charts)}</div>
<h2>Every job</h2>
<table><thead><tr>{head}</tr></thead><tbody>{table_rows}</tbody></table>
</body></html>
"""


def _hours(at: float, first: float) -> float:
    return (at - first) / 3600


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
