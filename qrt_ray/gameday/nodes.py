"""Losing a Ray worker node on purpose, for game days: a task pinned to the node kills
the node's raylet and every process under it, as a machine that dies takes them all.

Ray then finds the node dead, and restarts the farm's actors that ran there on the
nodes left (devices have ``max_restarts``). The scheduler's node is never a target:
the farm's control plane and its store live there.
"""

from __future__ import annotations

import logging
import os

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

logger = logging.getLogger("qrt.gameday")


def kill_raylet(node_id: str) -> int:
    """SIGKILL the raylet of ``node_id`` and everything under it (this process last,
    should it be one of them); returns how many processes there were. Only what runs
    on this machine is seen."""
    import psutil

    doomed: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "raylet" in line and f"--node_id={node_id}" in line:
            doomed += [proc, *proc.children(recursive=True)]
    me = os.getpid()
    doomed.sort(key=lambda p: p.pid == me)
    for proc in doomed:
        try:
            proc.kill()
        except psutil.Error:
            continue
    return len(doomed)


_kill_task = ray.remote(num_cpus=0, max_retries=0)(kill_raylet)


def lose_node(node_id: str, timeout_s: float = 60.0) -> int | None:
    """Kill a Ray node's raylet and its processes from a task on that node.

    Returns:
        How many processes the task killed, or None when it died with them before it
        could say (the usual case: it is one of them).

    Raises:
        ValueError: no alive node has that id.
    """
    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    if node_id not in alive:
        raise ValueError(f"node {node_id[:12]}: no alive Ray node has this id")
    strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    ref = _kill_task.options(scheduling_strategy=strategy).remote(node_id)
    try:
        return int(ray.get(ref, timeout=timeout_s))
    except ray.exceptions.RayError as exc:
        logger.info("node %s: the kill task went with it (%s)", node_id[:12], type(exc).__name__)
        return None
