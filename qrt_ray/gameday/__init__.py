"""Game days: named scenarios of faults run against a running farm (``qrt gameday``),
with a report of the farm's reactions, recovery times, SLI impact and error budget
spent. Scenarios ship in ``configs/gamedays/``."""

from qrt_ray.gameday.report import Report, render
from qrt_ray.gameday.scenario import Scenario, load_scenario, packaged

__all__ = ["Report", "Scenario", "load_scenario", "packaged", "render"]
