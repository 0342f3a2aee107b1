"""Chaos drills share the session's loopback Ray head (``tests/ray_head.py``)."""
