"""Reading Prometheus text in tests: a metric's value, not only its name.

``prometheus_client`` prints every metric's name and help even with no samples, so a
test must read the sample it means.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels`` (0 if none).

    Counters are read by their sample name (``qrt_x_total``); several matching samples
    are summed.
    """
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
