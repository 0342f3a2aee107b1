"""Generate the Grafana dashboards into ``qrt_ray/configs/dashboards/``, or check that
the committed files are current (``python -m qrt_ray.dashboards [--check]``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from qrt_ray.dashboards import debug, executive, oncall
from qrt_ray.dashboards.spec import DashboardSpec

OUT_DIR = Path(__file__).resolve().parents[1] / "configs" / "dashboards"
REGENERATE = "python -m qrt_ray.dashboards"


def specs() -> list[DashboardSpec]:
    """The three dashboards, as specs: executive, on-call, debug."""
    return [executive.spec(), oncall.spec(), debug.spec()]


def render_all() -> dict[str, str]:
    """Every dashboard as JSON text, by file name (``<uid>.json``).

    Deterministic: sorted keys, 2-space indent, one trailing newline.
    """
    from qrt_ray.dashboards.build import dashboard_json  # the SDK: only to generate

    return {
        f"{s.uid}.json": json.dumps(dashboard_json(s), indent=2, sort_keys=True) + "\n"
        for s in specs()
    }


def stale(out_dir: Path = OUT_DIR) -> list[str]:
    """Why the files in ``out_dir`` differ from what :func:`render_all` makes, one line each."""
    wanted = render_all()
    problems = []
    for name, text in sorted(wanted.items()):
        path = out_dir / name
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} is stale")
    extra = sorted(p.name for p in out_dir.glob("*.json") if p.name not in wanted)
    problems.extend(f"{out_dir / name} is not generated: remove it" for name in extra)
    return problems


def write_all(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write every dashboard into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(render_all().items()):
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the dashboards, or with ``--check`` exit 1 when stale."""
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="only check that the committed files are current"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help=f"folder of the JSON files (default {OUT_DIR})"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.out)
        command = REGENERATE if args.out == OUT_DIR else f"{REGENERATE} --out {args.out}"
        for line in problems:
            print(f"{line}; regenerate with `{command}`", file=sys.stderr)
        return 1 if problems else 0
    for path in write_all(args.out):
        print(path)
    return 0
