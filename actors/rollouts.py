"""The farm's post-processing versions: which one serves user jobs per method, and the
rollout of a candidate beside it (failure mode F10).

The scheduler actor owns one :class:`Rollouts` (it is the store's only owner). The
calibration manager asks :meth:`Rollouts.canary_versions` before each canary round
and runs each version on the round's counts; the recorded round comes back through
:meth:`Rollouts.observe`, which moves the rollout as
:func:`qrt_ray.policies.rollout.observe` decides. Every move is stored before it is
served, sealed into the audit chain and counted. Clients (the Sampler) ask
:meth:`Rollouts.served` for the versions to apply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from qrt_ray.access.audit import AuditEntry
from qrt_ray.config import RolloutConfig
from qrt_ray.errors import ValidationError, brief
from qrt_ray.metrics import RuntimeMetrics
from qrt_ray.mitigation import pipelines
from qrt_ray.policies import rollout
from qrt_ray.policies.rollout import Phase, Rollout
from qrt_ray.store import CanaryRecord, JobStore

logger = logging.getLogger("qrt.rollouts")

Audit = Callable[[Sequence[AuditEntry]], Awaitable[None]]


class Rollouts:
    """Served and candidate post-processing versions, kept in the store.

    Args:
        store: where each method's state lives (read once by :meth:`load`).
        config: when a candidate is promoted or rolled back.
        metrics: ``qrt_postprocess_version`` and rollout moves (None: not counted).
        audit: seals each move into the audit chain (None: not sealed).
        clock: unix seconds.
    """

    def __init__(
        self,
        store: JobStore,
        config: RolloutConfig,
        metrics: RuntimeMetrics | None = None,
        audit: Audit | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self._audit = audit
        self._clock = clock
        self._states = {m: Rollout(m, v) for m, v in pipelines.DEFAULT_VERSIONS.items()}
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Read each method's stored state. A stored version this build does not know
        (an older install took over) is not served: the method's default is, and the
        log says so."""
        for method, text in self.store.rollouts().items():
            try:
                state = Rollout.from_json(json.loads(text))
                pipelines.pipeline(state.method, state.served)
            except (ValueError, TypeError, KeyError, ValidationError) as exc:
                logger.error(
                    "stored rollout of %s is unusable (%s); serving the default",
                    method,
                    brief(str(exc), 200),
                )
                continue
            self._states[method] = state
        self._publish()

    # == what is served ================================================================

    def served(self) -> dict[str, str]:
        """The version of each method user jobs get."""
        return {m: s.served for m, s in sorted(self._states.items())}

    def canary_versions(self) -> dict[str, list[str]]:
        """Per method, the versions a canary round runs: served first, then the
        candidate in shadow."""
        return {m: s.versions() for m, s in sorted(self._states.items())}

    def view(self) -> list[dict[str, Any]]:
        """Every method's rollout, for ``qrt rollout``."""
        out = []
        for method, state in sorted(self._states.items()):
            row = state.to_json()
            row["versions"] = {
                v: {"summary": p.summary, "drill": p.drill}
                for v, p in sorted(pipelines.versions_of(method).items())
            }
            out.append(row)
        return out

    # == moves =========================================================================

    async def start(self, method: str, version: str) -> dict[str, Any]:
        """Put ``version`` of ``method`` in shadow beside the served one.

        Raises:
            ValidationError: unknown method or version, the version is already
                served, or another candidate is in shadow.
        """
        pipelines.pipeline(method, version)
        async with self._lock:
            state = self._state(method)
            try:
                moved = rollout.start(state, version, self._clock())
            except ValueError as exc:
                raise ValidationError(f"version={version!r}: {exc}") from None
            await self._save(moved, "operator", "rollout.start")
        return moved.to_json()

    async def rollback(self, method: str, reason: str = "") -> dict[str, Any]:
        """Stop the candidate in shadow, or put back the version the last promotion
        replaced.

        Raises:
            ValidationError: unknown method, or nothing to roll back.
        """
        async with self._lock:
            state = self._state(method)
            why = (
                f"rolled back by the operator: {brief(reason, 200)}"
                if reason
                else ("rolled back by the operator")
            )
            try:
                moved = rollout.rollback(state, self._clock(), why)
            except ValueError as exc:
                raise ValidationError(f"method={method!r}: {exc}") from None
            await self._save(moved, "operator", "rollout.rollback")
        return moved.to_json()

    def _state(self, method: str) -> Rollout:
        state = self._states.get(method) if isinstance(method, str) else None
        if state is None:
            raise ValidationError(
                f"method={brief(method, 40)!r}: this farm serves no such post-processing "
                f"method; use one of {', '.join(sorted(self._states))}"
            )
        return state

    async def observe(self, record: CanaryRecord) -> None:
        """Move each rollout in shadow by one recorded canary round.

        A round that found its device drifted judges no release: its calibration,
        which every mitigation version corrects with, is known to be wrong there, and
        no user job runs on it (the device is paused to be recalibrated).
        """
        if record.drifted:
            return
        async with self._lock:
            for method, state in list(self._states.items()):
                if state.phase is not Phase.SHADOW or not state.candidate:
                    continue
                key = pipelines.shadow_key(method, state.candidate)
                pairs = [
                    (_value(c, method), _value(c, key))
                    for c in record.detail.get("canaries", [])
                    if isinstance(c, dict) and key in (c.get("mitigated") or {})
                ]
                moved = rollout.observe(state, pairs, self.config, self._clock(), record.device)
                if moved == state:
                    continue
                if moved.phase is state.phase:
                    self._states[method] = moved  # counts only: kept in memory until a move
                    continue
                await self._save(moved, "farm", f"rollout.{moved.phase.value}")

    async def _save(self, moved: Rollout, actor: str, action: str) -> None:
        """Store, then serve, then tell (audit, metrics, log)."""
        text = json.dumps(moved.to_json(), sort_keys=True)
        await asyncio.to_thread(self.store.save_rollout, moved.method, text, moved.changed_at)
        self._states[moved.method] = moved
        self._publish()
        if self.metrics is not None:
            self.metrics.rollout_changes.labels(moved.method, moved.phase.value).inc()
        log = logger.warning if moved.phase is Phase.ROLLED_BACK else logger.info
        log("%s: %s %s (%s)", moved.method, moved.phase.value, moved.candidate, moved.reason)
        if self._audit is not None:
            detail = {
                "served": moved.served,
                "candidate": moved.candidate,
                "reason": moved.reason[:300],
            }
            outcome = "alert" if moved.phase is Phase.ROLLED_BACK and actor == "farm" else "ok"
            await self._audit([AuditEntry(actor, action, "", moved.method, outcome, detail)])

    def _publish(self) -> None:
        if self.metrics is None:
            return
        gauge = self.metrics.pipeline_version
        gauge.clear()
        for method, state in self._states.items():
            gauge.labels(method, state.served, "served").set(1)
            if state.candidate and state.candidate != state.served:
                role = "shadow" if state.phase is Phase.SHADOW else state.phase.value
                gauge.labels(method, state.candidate, role).set(1)


def _value(canary: dict[str, Any], key: str) -> float | None:
    value = (canary.get("mitigated") or {}).get(key)
    return float(value) if isinstance(value, int | float) else None
