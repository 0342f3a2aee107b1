"""``python -m qrt_ray.dashboards [--check]``: see :mod:`qrt_ray.dashboards.generate`."""

from __future__ import annotations

import sys

from qrt_ray.dashboards.generate import main

if __name__ == "__main__":
    sys.exit(main())
