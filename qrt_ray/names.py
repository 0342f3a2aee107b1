"""The names a farm's parts find each other by in Ray (no Ray needed to import)."""

#: the Ray namespace of a farm started by ``qrt up``
DEFAULT_NAMESPACE = "qrt"
SCHEDULER_NAME = "scheduler"
CALIBRATION_NAME = "calibration"
#: Ray Serve's controller actor (in Serve's own namespace, ``serve``)
SERVE_CONTROLLER = "SERVE_CONTROLLER_ACTOR"
#: Ray gives the head node a little of this resource, and no other node
HEAD_RESOURCE = "node:__internal_head__"


def device_actor_name(device: str) -> str:
    """The Ray actor name of a device."""
    return f"device:{device}"
