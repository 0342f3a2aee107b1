"""Qiskit primitives (V2) on a qrt farm: Sampler, Estimator, Session, Batch, backends.

Code written for ``qiskit_ibm_runtime``'s ``SamplerV2`` / ``EstimatorV2`` runs
unchanged apart from the import and the ``mode``::

    from qrt_ray import QuantumRuntime
    from qrt_ray.primitives import Estimator, Session

    with QuantumRuntime.local() as rt, Session(rt) as session:
        estimator = Estimator(mode=session)
        estimator.options.resilience_level = 2
        job = estimator.run([(circuit, observable, parameter_values)])
        print(job.result()[0].data.evs)
"""

from qrt_ray.primitives.backend import QrtBackend, QrtBackendJob
from qrt_ray.primitives.estimator import Estimator
from qrt_ray.primitives.job import PrimitiveJob
from qrt_ray.primitives.modes import Batch, Session, SessionClosedError
from qrt_ray.primitives.options import EstimatorOptions, SamplerOptions
from qrt_ray.primitives.sampler import Sampler

EstimatorV2 = Estimator
SamplerV2 = Sampler

__all__ = [
    "Batch",
    "Estimator",
    "EstimatorOptions",
    "EstimatorV2",
    "PrimitiveJob",
    "QrtBackend",
    "QrtBackendJob",
    "Sampler",
    "SamplerOptions",
    "SamplerV2",
    "Session",
    "SessionClosedError",
]
