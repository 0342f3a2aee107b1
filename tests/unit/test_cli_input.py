"""`qrt submit` and `qrt estimate` judge their files before reaching any farm: a file that
is not UTF-8, too large or refused by the intake gate exits 2 with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from qrt_ray.cli import main

GOOD = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\ncreg c[1];\nmeasure q[0] -> c[0];\n'


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"OPENQASM 2.0;\n// caf\xe9\n", "not UTF-8 text (byte 20 is 0xe9)"),
        (b'OPENQASM 2.0;\ninclude "/etc/passwd";\n', "not allowed: the farm never reads files"),
        (b"OPENQASM 2.0;\nqreg q[99999999999999999999999];\n", "is too large"),
        (b"", "empty OpenQASM text"),
    ],
    ids=["latin-1", "include", "panic-size", "empty"],
)
@pytest.mark.parametrize("command", ["submit", "estimate"])
def test_a_bad_file_exits_2_with_one_line_and_no_farm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, content: bytes, says: str
) -> None:
    path = tmp_path / "bad.qasm"
    path.write_bytes(content)
    # no farm is running and none is reached: the file is judged first
    assert main([command, str(path), "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_a_file_larger_than_a_circuit_may_be_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "huge.qasm"
    with open(path, "wb") as f:
        f.truncate(3 * 2**20)  # sparse: 3 MB that nobody should read
    assert main(["submit", str(path), "--address", "127.0.0.1:1"]) == 2
    assert "a circuit may have at most 2097152" in capsys.readouterr().err


def test_a_good_file_gets_as_far_as_looking_for_the_farm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ok.qasm"
    path.write_text(GOOD)
    reached: list[str] = []

    def no_farm(args: object) -> object:
        reached.append("connect")
        raise ConnectionError("nothing here")

    monkeypatch.setattr("qrt_ray.cli._connect", no_farm)
    assert main(["submit", str(path)]) == 3  # no farm
    assert reached == ["connect"]
    assert "cannot reach Ray" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ("mysql://farm:s3cret@db/qrt", "unsupported database URL scheme 'mysql'"),
        ("postgresql://farm:s3cret@/qrt?host=/nonexistent", "cannot connect to PostgreSQL"),
    ],
    ids=["scheme", "unreachable"],
)
def test_qrt_up_judges_the_store_before_starting_ray(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, store: str, says: str
) -> None:
    started: list[str] = []
    monkeypatch.setattr("qrt_ray.cli._start_head", lambda args: started.append("head"))
    assert main(["up", "--port", "1", "--store", store]) != 0
    err = capsys.readouterr().err
    assert says in err and "s3cret" not in err
    assert started == []  # no Ray head left behind for a farm that cannot start


def test_qrt_down_stops_the_head_ray_address_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from qrt_ray.cli import DEFAULT_PORT, _port_of

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6395")
    assert _port_of("auto") == _port_of(None) == 6395
    assert _port_of("127.0.0.1:7000") == 7000  # --address wins
    monkeypatch.delenv("RAY_ADDRESS")
    assert _port_of("auto") == DEFAULT_PORT


def test_a_dead_ray_address_in_the_environment_is_said_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `--address auto` (every command's default) with $RAY_ADDRESS naming a head that
    # is gone: ray.init would wait over a minute; the check answers at once
    import socket
    import time

    from qrt_ray.farm import check_reachable

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(
        ConnectionError, match=f"no Ray cluster answers at address '127.0.0.1:{port}'"
    ):
        check_reachable("auto")
    assert time.monotonic() - start < 5
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # a dashboard URL: Ray's to judge
    check_reachable("auto")
