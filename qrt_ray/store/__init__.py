"""Durable job storage: the interface, SQLite by default and PostgreSQL by URL."""

from qrt_ray.store.base import (
    CalibrationRecord,
    CanaryRecord,
    FinishedJob,
    JobRecord,
    JobStore,
    MaintenanceWindow,
    ShotRecord,
    StateUpdate,
    TransitionEvent,
)
from qrt_ray.store.sqlite import SQLiteJobStore, default_store_path
from qrt_ray.store.urls import check_store, open_store, redact_url

__all__ = [
    "CalibrationRecord",
    "CanaryRecord",
    "FinishedJob",
    "JobRecord",
    "JobStore",
    "MaintenanceWindow",
    "SQLiteJobStore",
    "ShotRecord",
    "StateUpdate",
    "TransitionEvent",
    "check_store",
    "default_store_path",
    "open_store",
    "redact_url",
]
