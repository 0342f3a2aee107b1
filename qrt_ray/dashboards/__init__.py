"""Grafana dashboards as code: executive, on-call and debug views of the farm.

The dashboards are specs (:mod:`.spec` and one module each); :mod:`.generate` turns
them into JSON under ``qrt_ray/configs/dashboards/`` with grafana-foundation-sdk
(``python -m qrt_ray.dashboards``). :mod:`.queries` reads the panels' PromQL back out
of that JSON and :mod:`.render` draws it from a Prometheus without Grafana. Only
generating needs the SDK.
"""

from __future__ import annotations

from qrt_ray.dashboards.queries import PanelQuery, instantiate, panel_queries

__all__ = ["PanelQuery", "instantiate", "panel_queries"]
