"""Placement and scheduling policies: pure functions of (job, device snapshots, context)."""

from policies.placement import expected_errors, fewest_expected_errors, fitting_devices

__all__ = ["expected_errors", "fewest_expected_errors", "fitting_devices"]
