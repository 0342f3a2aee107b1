"""Results of the primitives: Qiskit's containers, with this runtime's details beside them.

``result.metadata`` and ``result[i].metadata`` hold exactly the keys Qiskit's backend
primitives give (the run: ``version``; a Sampler PUB: ``shots`` and
``circuit_metadata``; an Estimator PUB: ``target_precision``, ``shots`` and
``circuit_metadata``), so code and tests that compare whole dicts work unchanged.

What the farm adds (device, calibration, farm job, the mitigation applied, its cost,
warnings, readout-mitigated quasi-distributions) is one dict beside them:
``result[i].qrt``, and ``result.qrt`` for the run. Both are plain data (JSON-ready).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from qiskit.primitives import DataBin, PrimitiveResult, PubResult, SamplerPubResult


class _Details:
    """The ``qrt`` dict beside a Qiskit container's own fields."""

    __slots__ = ()
    _qrt: dict[str, Any]

    @property
    def qrt(self) -> dict[str, Any]:
        """This runtime's details: for a PUB, device, calibration, farm job, mitigation
        applied, cost and warnings (and, with the Sampler's
        ``resilience.measure_mitigation``, ``quasi_dists`` / ``nearest_probability``);
        for the run, its primitive job id and mode."""
        return self._qrt


class QrtPrimitiveResult(_Details, PrimitiveResult):
    """Qiskit's ``PrimitiveResult``, plus ``qrt``: the run's primitive job id and mode."""

    def __init__(
        self,
        pub_results: Iterable[PubResult],
        metadata: dict[str, Any] | None = None,
        qrt: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(pub_results, metadata)
        self._qrt = qrt or {}


class QrtPubResult(_Details, PubResult):
    """Qiskit's ``PubResult`` (Estimator), plus ``qrt``: where and how the PUB ran."""

    __slots__ = ("_qrt",)

    def __init__(
        self,
        data: DataBin,
        metadata: dict[str, Any] | None = None,
        qrt: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data, metadata)
        self._qrt = qrt or {}


class QrtSamplerPubResult(QrtPubResult, SamplerPubResult):
    """Qiskit's ``SamplerPubResult``, plus ``qrt``: where and how the PUB ran."""

    __slots__ = ()
