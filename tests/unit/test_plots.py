"""Pictures: a result's histogram, a device's drift and the demo report are drawn, and
a real browser (headless Chromium) shows data in them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from qrt_ray.cli import main
from qrt_ray.demo import DemoRow
from qrt_ray.models import JobResult, JobSpec
from qrt_ray.plots import demo_report_html, drift_figure, result_figure
from qrt_ray.results import decode_result
from qrt_ray.store import open_store
from tests.local_farm import ghz, run_and_record

DEAD = "127.0.0.1:1"  # no farm: the commands read the store
BLUE = (0x3A, 0x6E, 0xA5)  # the bars' colour


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, JobResult]:
    """A store with one job done (a 4-qubit GHZ) and three calibrations of manila."""
    tmp = tmp_path_factory.mktemp("plots")

    spec = JobSpec(circuits=(ghz(4),), shots=800, device="manila")
    (job,), _ = run_and_record(tmp, [spec], calibrations=3, reason="drift")
    store = open_store(tmp / "jobs.sqlite3")
    try:
        result = decode_result(store.get_blob(store.get(job).result_sha256))
    finally:
        store.close()
    return tmp / "jobs.sqlite3", job, result


def colored_share(png: Path, rgb: tuple[int, int, int] = BLUE, tolerance: int = 40) -> float:
    """Share of the picture's pixels within ``tolerance`` of ``rgb``."""
    import numpy as np
    from matplotlib.image import imread

    pixels = imread(png)[..., :3]
    if pixels.dtype != np.uint8:
        pixels = (pixels * 255).round()
    distance = np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1)
    return float((distance <= tolerance).mean())


def test_a_result_draws_its_histogram(stored: tuple[Path, str, JobResult], tmp_path: Path) -> None:
    _, _, result = stored
    png = tmp_path / "ghz.png"
    figure = result.plot(png)
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert set(labels[:2]) == {"0000", "1111"}  # a GHZ state: the two peaks first
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == sorted(heights, reverse=True)  # most frequent first
    assert sum(heights) == pytest.approx(1.0) and heights[0] > 0.3
    assert colored_share(png) > 0.01
    with pytest.raises(Exception, match="circuit=3"):
        result_figure(result, 3)


def test_qrt_plot_draws_results_and_drift_from_the_store(
    stored: tuple[Path, str, JobResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, job, _ = stored
    out = tmp_path / "result.svg"
    argv = ["plot", "result", job, "--out", str(out), "--store", str(path), "--address", DEAD]
    assert main(argv) == 0 and "<svg" in out.read_text()
    drift = tmp_path / "drift.png"
    argv = ["plot", "drift", "manila", "--out", str(drift), "--store", str(path), "--address", DEAD]
    assert main(argv) == 0 and colored_share(drift) > 0.001
    capsys.readouterr()
    argv = ["plot", "result", job, "--out", str(tmp_path / "x.gif"), "--address", DEAD]
    assert main(argv) == 2 and "name a .png, .svg or .pdf file" in capsys.readouterr().err
    with pytest.raises(Exception, match="no calibration history"):
        drift_figure("manila", [])


def _report() -> tuple[dict, str]:
    rows = [
        DemoRow(f"{fam}-{n}", fam, n, "DONE", dev, 1.0 + n / 10, 0.9 - n / 100)
        for fam, dev in (("ghz", "manila"), ("qft", "nairobi"))
        for n in (3, 4, 5)
    ]
    report = {"jobs": 6, "done": 6, "elapsed_s": 12.5, "shots": 2000, "rows": rows}
    return report, "family  jobs  devices\nghz     3     manila"


def test_the_demo_report_is_one_page_with_its_tables_and_charts() -> None:
    report, summary = _report()
    page = demo_report_html(report, summary)
    assert page.count("<svg") == 3 and page.count("<tr>") == 1 + 6
    assert "6 of 6 jobs done" in page and "ghz-3" in page and "&lt;" not in summary


def _chromium() -> str:
    found = next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )
    if found is None:
        raise RuntimeError(
            "headless Chromium is not installed; the picture tests render in it. Install it "
            "(Debian: apt-get install chromium; .ci/run does)"
        )
    return found


def screenshot(page: Path, out: Path) -> Path:
    """``page`` as headless Chromium renders it."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                _chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                "--hide-scrollbars", f"--user-data-dir={profile}",
                f"--screenshot={out}", "--window-size=1280,1400", page.as_uri(),
            ],
            check=True, capture_output=True, timeout=120,
            env={**os.environ, "HOME": profile},
        )  # fmt: skip
    return out


def test_a_browser_shows_data_in_the_report_and_the_plots(
    stored: tuple[Path, str, JobResult], tmp_path: Path
) -> None:
    report, summary = _report()
    page = tmp_path / "report.html"
    page.write_text(demo_report_html(report, summary))
    shot = screenshot(page, tmp_path / "report.png")
    assert colored_share(shot) > 0.005  # the latency chart's bars are on screen
    assert colored_share(shot, (0x4F, 0x8F, 0x4F)) > 0.002  # and the fidelity chart's
    _, _, result = stored
    png = tmp_path / "hist.png"
    result.plot(png)
    viewer = tmp_path / "hist.html"
    viewer.write_text(f'<html><body><img src="{png.name}"></body></html>')
    assert colored_share(screenshot(viewer, tmp_path / "hist-shot.png")) > 0.005
    blank = tmp_path / "blank.html"  # the check itself: an empty page shows no bars
    blank.write_text("<html><body></body></html>")
    assert colored_share(screenshot(blank, tmp_path / "blank.png")) == 0.0
