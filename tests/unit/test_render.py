"""Progress output: a redrawn line on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from qrt_ray.render import Progress


def test_progress_in_a_log_writes_plain_lines_rate_limited() -> None:
    out = io.StringIO()  # not a TTY, like a CI log or `> file`
    quiet = Progress(10, "noisy runs", stream=out, log_every_s=3600)
    for done in range(1, 10):
        quiet.update(done)
    assert out.getvalue() == ""  # nothing before the interval passes
    quiet.close()
    assert out.getvalue().startswith("noisy runs: 10/10 in ")

    out = io.StringIO()
    chatty = Progress(4, "layouts", stream=out, log_every_s=0)
    for done in range(1, 4):
        chatty.update(done, "detail")
    lines = out.getvalue().splitlines()
    assert [ln.split(" after ")[0] for ln in lines] == [f"layouts: {i}/4" for i in (1, 2, 3)]
    assert all(ln.endswith("detail") and "\r" not in ln for ln in lines)
