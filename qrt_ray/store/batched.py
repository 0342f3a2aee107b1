"""Many rows in one statement: the store's writes that touch a row per job.

The store's writer is a thread of a busy process. Each statement it runs hands
Python's GIL over while the database works and must win it back afterwards; when the
process's event loop is busy, winning it back takes up to the interpreter's switch
interval (5 ms). A write of 200 moves made of 400 one-row statements took 4.5 ms
alone and 20-330 ms beside a busy thread (`docs/measurements.md`). Written as a few
statements of many rows, it hands the GIL over a few times, whatever the number of
jobs.

:func:`insert_rows` is plain SQL for both stores. :func:`apply_moves` needs SQLite
(``UPDATE ... FROM`` and its JSON functions); PostgreSQL applies moves a statement each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from qrt_ray.errors import IntegrityError
from qrt_ray.store.base import StateUpdate

# bound variables in one statement at most: SQLite's oldest limit (newer builds allow
# 32,766; PostgreSQL, 65,535)
MAX_VARIABLES = 999
# values in one IN (...) list: under SQLite's oldest limit of 999 bound variables
IN_MAX = 512

# fields a move may set (a StateUpdate's ``fields``), and the columns of those held as
# JSON text
SETTABLE = (
    "device",
    "calibration_id",
    "error",
    "result_sha256",
    "placement",
    "attempts",
    "compile_info",
    "recovery",
    "error_class",
)
JSON_COLUMNS = {
    "placement": "placement_json",
    "compile_info": "compile_json",
    "recovery": "recovery_json",
}
TRANSITION_COLUMNS = "job_id, seq, from_state, to_state, at, reason, event"


class _Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...


class _Conn(Protocol):
    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> _Cursor: ...


def chunks(rows: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``rows`` in slices of at most ``size``."""
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def insert_rows(conn: _Conn, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> int:
    """``head VALUES (...), (...) tail`` for ``rows`` (all of one width), in as few
    statements as :data:`MAX_VARIABLES` allows; returns the rows the statements wrote."""
    if not rows:
        return 0
    width = len(rows[0])
    one = "(" + ",".join("?" * width) + ")"
    written = 0
    for part in chunks(rows, max(1, MAX_VARIABLES // width)):
        sql = f"{head} VALUES {','.join([one] * len(part))} {tail}".rstrip()
        cur = conn.execute(sql, [v for row in part for v in row])
        written += max(0, cur.rowcount)
    return written


def column_value(name: str, value: Any) -> tuple[str, Any]:
    """The column a move's field ``name`` sets, and the value stored there."""
    if name not in SETTABLE:
        raise ValueError(f"StateUpdate.fields: {name!r} is not settable")
    if name in JSON_COLUMNS:
        return JSON_COLUMNS[name], None if value is None else json.dumps(value, sort_keys=True)
    return name, value


@dataclass(slots=True)
class _Change:
    """What one job's applied moves of a batch leave in its row."""

    was: str  # the state the first of them found
    state: str = ""
    at: float = 0.0
    columns: dict[str, Any] = field(default_factory=dict)


def apply_moves(conn: _Conn, updates: Sequence[StateUpdate]) -> list[bool]:
    """Apply ``updates`` in order, each only if its job is still in its ``from_state``
    (as one statement each would), in a few statements; returns which applied.

    Runs inside the writer's transaction, which holds SQLite's write lock: the states
    read first cannot change before the rows are written. A job's moves in one batch
    become one row update and a transition each, numbered after its last one (their
    bills are the caller's to write).
    """
    columns = [[column_value(k, v) for k, v in u.fields.items()] for u in updates]
    now = _states(conn, list(dict.fromkeys(u.job_id for u in updates)))
    applied: list[bool] = []
    changes: dict[str, _Change] = {}
    transitions: list[tuple[Any, ...]] = []
    for u, sets in zip(updates, columns, strict=True):
        state, seq = now.get(u.job_id, (None, 0))
        if state != u.from_state.value:
            applied.append(False)
            continue
        now[u.job_id] = (u.to_state.value, seq + 1)
        change = changes.setdefault(u.job_id, _Change(was=state))
        change.state, change.at = u.to_state.value, u.at
        change.columns.update(sets)
        transitions.append(
            (u.job_id, seq + 1, u.from_state.value, u.to_state.value, u.at, u.reason, u.event)
        )
        applied.append(True)
    by_columns: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for job_id, c in changes.items():
        names = tuple(sorted(c.columns))
        row = (job_id, c.was, c.state, c.at, *(c.columns[n] for n in names))
        by_columns.setdefault(names, []).append(row)
    for names, rows in by_columns.items():
        _update_rows(conn, names, rows)
    insert_rows(conn, f"INSERT INTO transitions ({TRANSITION_COLUMNS})", transitions)
    return applied


def _states(conn: _Conn, job_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
    """Each stored job's state and the number of its last transition (-1: none), read
    as one row per slice of ids (a row per job would hand the GIL over for each)."""
    out: dict[str, tuple[str, int]] = {}
    for part in chunks(job_ids, IN_MAX):
        row = conn.execute(
            "SELECT json_group_array(json_array(job_id, state, (SELECT COALESCE(MAX(seq), -1) "
            "FROM transitions t WHERE t.job_id = jobs.job_id))) "
            f"FROM jobs WHERE job_id IN ({','.join('?' * len(part))})",
            list(part),
        ).fetchone()
        for job_id, state, seq in json.loads(row[0]):
            out[job_id] = (state, int(seq))
    return out


def _update_rows(conn: _Conn, names: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """One ``UPDATE ... FROM (VALUES ...)`` per slice of jobs that set the same columns;
    each row still names the state it was read in."""
    sets = ["state=v.column3", "updated_at=v.column4"]
    sets += [f"{name}=v.column{5 + k}" for k, name in enumerate(names)]
    width = 4 + len(names)
    one = "(" + ",".join("?" * width) + ")"
    for part in chunks(rows, max(1, MAX_VARIABLES // width)):
        cur = conn.execute(
            f"UPDATE jobs SET {', '.join(sets)} FROM (VALUES {','.join([one] * len(part))}) "
            "AS v WHERE jobs.job_id = v.column1 AND jobs.state = v.column2",
            [v for row in part for v in row],
        )
        if cur.rowcount != len(part):  # nothing else writes while the lock is held
            raise IntegrityError(
                f"{len(part) - max(0, cur.rowcount)} of {len(part)} jobs changed state "
                "while a move of theirs was being written"
            )
