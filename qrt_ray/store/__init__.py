"""Durable job storage: the interface, and the SQLite implementation used by default."""

from qrt_ray.store.base import JobRecord, JobStore, ShotRecord, StateUpdate, TransitionEvent
from qrt_ray.store.sqlite import SQLiteJobStore, default_store_path, open_store

__all__ = [
    "JobRecord",
    "JobStore",
    "SQLiteJobStore",
    "ShotRecord",
    "StateUpdate",
    "TransitionEvent",
    "default_store_path",
    "open_store",
]
