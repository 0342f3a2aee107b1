"""Service level objectives: the config (``configs/slos.yaml``), the indicators
computed from the job store (``qrt slo``), and the Prometheus rules and Alertmanager
routes generated from the config (``qrt slo rules``)."""

from qrt_ray.slo.config import SloConfig, load_slo_config, load_slo_config_text
from qrt_ray.slo.indicators import SloReport, evaluate_slos, render_report, report_dict
from qrt_ray.slo.rules import alertmanager_route, render_rules, rule_groups

__all__ = [
    "SloConfig",
    "SloReport",
    "alertmanager_route",
    "evaluate_slos",
    "load_slo_config",
    "load_slo_config_text",
    "render_report",
    "render_rules",
    "report_dict",
    "rule_groups",
]
