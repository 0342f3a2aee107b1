"""Placement and scheduling: pure functions of (job, device snapshots, context).

``fidelity`` estimates a circuit's success probability on a calibration with the
layout that earns it; ``costs`` prices a job and predicts its run and wait time;
``placement`` holds the policies; ``placer`` is the engine the scheduler and the farm
simulator share; ``queueing`` orders waiting jobs (priority with aging, fair share).
"""
