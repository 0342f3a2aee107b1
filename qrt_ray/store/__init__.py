"""Durable job storage: the interface, and the SQLite implementation used by default."""

from qrt_ray.store.base import (
    CalibrationRecord,
    CanaryRecord,
    JobRecord,
    JobStore,
    MaintenanceWindow,
    ShotRecord,
    StateUpdate,
    TransitionEvent,
)
from qrt_ray.store.sqlite import SQLiteJobStore, default_store_path, open_store

__all__ = [
    "CalibrationRecord",
    "CanaryRecord",
    "JobRecord",
    "JobStore",
    "MaintenanceWindow",
    "SQLiteJobStore",
    "ShotRecord",
    "StateUpdate",
    "TransitionEvent",
    "default_store_path",
    "open_store",
]
