"""A delivery lane: one thread and one hub connection per partner.

Rules:

1. **Isolation.** Each partner has its own lane, so a partner whose folder is slow, full or
   unwritable holds up nobody else: the other lanes run on their own connections.
2. **What to send comes from the ledger** (:mod:`exchange.service.due`) every cycle; the lane
   keeps only pacing in memory (when to look again), which a restart may lose safely.
3. **Transient failure** (hub down, timeout, reset): that delivery waits
   (``UploadFailed``, exponential backoff with jitter, capped: core.delivery policy) and the
   lane pauses until then, so a down hub sees one attempt per backoff step per partner, not a
   storm.
4. **Permanent failure** (host key, auth, permission, disk full, the partner's key missing or
   invalid, an agreement text a manifest cannot carry): every waiting delivery to that partner is ``parked``, one incident is opened (repeats
   count occurrences) and an error is logged. The lane then probes: after
   ``park_probe_seconds``, doubling up to an hour, it resumes the parked deliveries and tries
   again; the first permanent failure parks them all again. At start a parked partner is
   probed once.
5. **Strikes and poison.** An attempt that died without an answer from the transport (a crash,
   a bug, a spool copy that changed) is a strike; after ``max_attempts`` strikes the delivery
   is given up (``poisoned``) and the daemon quarantines its spool copy.
6. **Outcome unknown.** An error after a rename was requested never becomes ``UploadFailed``:
   the delivery stays ``uploading`` and the lane reconciles with the hub (manifest hashes)
   before anything else, so a complete delivery is never retried, cancelled or superseded;
   and a retried delivery is cancelled only after the hub shows no manifest of its attempts.
7. ``except Exception`` here is the service loop's licence (STYLE item 10): one bad delivery
   must never end the lane.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from exchange.core import delivery as lifecycle
from exchange.core.delivery import DeliveryState, next_attempt_at
from exchange.core.naming import DeliveryNames
from exchange.errors import HostKeyError, TransportError
from exchange.ledger import Delivery
from exchange.model import ReasonCode, VersionKind
from exchange.service import due
from exchange.service.context import Context
from exchange.service.deliver import (
    Abandoned,
    ManifestFieldError,
    OutcomeUnknown,
    RecipientKeyError,
    deliver_one,
)
from exchange.service.reconcile import (
    MANIFEST_MAX,
    poison_if_struck_out,
    reconcile_partner,
    remote_dir,
)
from exchange.transport import Transport
from exchange.transport.port import RemoteNotFoundError

_log = structlog.get_logger()
_PROBE_CAP = 3600.0


def park_reason(error: Exception) -> ReasonCode:
    """The incident reason for a permanent failure."""
    if isinstance(error, HostKeyError):
        return ReasonCode.HOST_KEY_MISMATCH
    if isinstance(error, RecipientKeyError):
        return ReasonCode.KEY_INVALID
    if isinstance(error, ManifestFieldError):
        return ReasonCode.ENCODING
    text = str(error)
    if "authentication failed" in text:
        return ReasonCode.AUTH_FAILED
    if "permission denied" in text:
        return ReasonCode.PERMISSION
    if "refused the write" in text or "no space" in text:
        return ReasonCode.HUB_FULL
    return ReasonCode.HUB_UNREACHABLE


class Lane(threading.Thread):
    """Delivers to one partner; see the module rules."""

    def __init__(self, ctx: Context, partner_id: str, connect: Callable[[], Transport]) -> None:
        super().__init__(name=f"lane-{partner_id}", daemon=True)
        self.ctx = ctx
        self.partner_id = partner_id
        self._connect = connect
        self._transport: Transport | None = None
        self.wake = threading.Event()
        self._reconciled = False
        self._hold_until = 0.0  # monotonic: no attempt before this (transient backoff)
        self._probe_delay = ctx.settings.park_probe_seconds
        #: Version kinds never change (versions are append-only), so they are cached.
        self._kinds: dict[int, VersionKind] = {}
        #: Transient failures in a row, for the lane's own backoff (reset by any success).
        self._failures = 0
        #: Deliveries left ``uploading`` after an error past a rename request (outcome
        #: unknown): the next reconciliation settles them, as a transient failure if need be.
        self._unknown: set[str] = set()

    # -- thread ------------------------------------------------------------------------------

    def run(self) -> None:
        while not self.ctx.stopping.is_set():
            try:
                self.cycle()
            except Exception as error:  # noqa: BLE001 - rule 7
                _log.exception("lane.failed", partner=self.partner_id, error=str(error))
                self._close()
            self.wake.wait(self.ctx.settings.tick_seconds)
            self.wake.clear()
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = self._connect()
        return self._transport

    # -- one cycle ---------------------------------------------------------------------------

    def cycle(self) -> None:
        mono = self.ctx.clock.monotonic()
        if mono < self._hold_until:
            return
        if self._parked():
            self._resume_all()  # the hold after a park has passed: probe
        if not self._reconciled and not self._reconcile():
            return
        for delivery in self._due():
            if self.ctx.stopping.is_set() or not self._attempt(delivery):
                break

    def _reconcile(self) -> bool:
        try:
            result = reconcile_partner(
                self.ctx, self.transport, self.partner_id, frozenset(self._unknown)
            )
        except TransportError as error:
            self._failed_without_delivery(error)
            return False
        self._reconciled = True
        self._unknown.clear()
        self._failures = 0
        _log.info(
            "lane.reconciled",
            partner=self.partner_id,
            count=result.completed,
            attempts=result.interrupted,
            detail=f"{result.temporaries_removed} temporary files removed",
        )
        return True

    def _failed_without_delivery(self, error: TransportError) -> None:
        if error.transient:
            self._hold(self._backoff())
            _log.warning("lane.hub_unavailable", partner=self.partner_id, error=error.message)
            self._close()
        else:
            self._park_all(error)

    def _hold(self, seconds: float) -> None:
        self._hold_until = self.ctx.clock.monotonic() + seconds

    def _backoff(self) -> float:
        """Seconds to wait after one more transient failure in a row (core.delivery policy:
        exponential, jittered, capped), so a long outage costs a trickle of connects."""
        self._failures += 1
        now = self.ctx.now()
        s = self.ctx.settings
        later = next_attempt_at(
            self._failures, now, self.ctx.rng, base=s.retry_base, cap=s.retry_cap
        )
        return (later - now).total_seconds()

    def _parked(self) -> bool:
        return bool(self.ctx.ledger.deliveries(DeliveryState.PARKED, recipient=self.partner_id))

    def _resume_all(self) -> None:
        now = self.ctx.now()
        for delivery in self.ctx.ledger.deliveries(DeliveryState.PARKED, recipient=self.partner_id):
            self.ctx.ledger.apply(delivery.id, lifecycle.Resumed(note="probe after park"), now)
        _log.info("lane.probe", partner=self.partner_id)

    def _due(self) -> list[Delivery]:
        ctx = self.ctx
        now = ctx.now()
        partner = ctx.config.partners.get(self.partner_id)
        runs: dict[str, datetime | None] = {}
        found: list[Delivery] = []
        for delivery in ctx.ledger.deliveries(
            DeliveryState.PENDING, DeliveryState.RETRY_WAIT, recipient=self.partner_id
        ):
            agreement = ctx.config.agreements.get(delivery.agreement)
            if agreement is None or partner is None:
                continue  # configuration removed: left waiting for ops, never guessed at
            if delivery.agreement not in runs:
                last = ctx.ledger.last_run(delivery.agreement)
                runs[delivery.agreement] = None if last is None else last.due_at
            last_run = runs[delivery.agreement]
            verdict = due.delivery_verdict(
                agreement=agreement,
                partner=partner,
                state=delivery.state,
                kind=self._kind(delivery.version),
                taken_at=delivery.created_at,
                next_attempt_at=delivery.next_attempt_at,
                last_run=last_run,
                now=now,
            )
            if isinstance(verdict, due.Cancel):
                if self._found_on_hub(delivery):
                    continue  # the partner holds it: sent, never cancelled (rule 6)
                ctx.ledger.apply(delivery.id, lifecycle.Cancelled(reason=verdict.reason), now)
                _log.warning(
                    "delivery.cancelled",
                    delivery=delivery.id,
                    recipient=self.partner_id,
                    agreement=delivery.agreement,
                    reason=verdict.reason,
                )
            elif isinstance(verdict, due.Due):
                found.append(delivery)
        return found

    def _found_on_hub(self, delivery: Delivery) -> bool:
        """Before a retried delivery is cancelled: True if an earlier attempt's manifest is
        final on the hub after all (then it is recorded ``sent``), or if the hub cannot be
        asked now (the cancellation waits for a cycle that can ask). By DESIGN invariant 12
        this finds nothing unless the ledger predates it; it costs one read per cancellation."""
        ctx = self.ctx
        if delivery.state is not DeliveryState.RETRY_WAIT:
            return False
        recorded = {a.sealed_sha256: a for a in ctx.ledger.attempts_of(delivery.id)}
        if not recorded:
            return False
        partner = ctx.config.partners[self.partner_id]
        names = DeliveryNames.for_delivery(delivery.id)
        found = io.BytesIO()
        try:
            self.transport.get(
                f"{remote_dir(ctx.config, partner.hub_folder)}/{names.manifest}",
                found,
                max_size=MANIFEST_MAX,
            )
        except RemoteNotFoundError:
            return False
        except TransportError as error:
            _log.warning("lane.hub_unavailable", partner=self.partner_id, error=error.message)
            self._close()
            return True
        attempt = recorded.get(hashlib.sha256(found.getvalue()).hexdigest())
        if attempt is None:
            return False
        now = ctx.now()
        with ctx.ledger.transaction():
            ctx.ledger.begin_upload(delivery.id, names.payload, now)
            ctx.ledger.complete_from_hub(delivery.id, attempt, now)
        _log.info(
            "delivery.reconciled",
            delivery=delivery.id,
            recipient=self.partner_id,
            agreement=delivery.agreement,
            state="sent",
            remote_name=names.payload,
        )
        return True

    def _kind(self, version_id: int) -> VersionKind:
        kind = self._kinds.get(version_id)
        if kind is None:
            kind = self._kinds[version_id] = self.ctx.ledger.get_version(version_id).kind
        return kind

    # -- one attempt -------------------------------------------------------------------------

    def _attempt(self, delivery: Delivery) -> bool:
        """Try one delivery; False when the lane should stop this cycle."""
        ctx = self.ctx
        try:
            sent = deliver_one(ctx, self.transport, delivery)
        except Abandoned:
            now = ctx.now()
            ctx.ledger.apply(
                delivery.id,
                lifecycle.UploadFailed(reason="abandoned at shutdown", retry_at=now),
                now,
            )
            _log.warning("delivery.abandoned", delivery=delivery.id, recipient=self.partner_id)
            return False
        except OutcomeUnknown as unknown:
            # The rename may have happened: never UploadFailed here (that would let a retry
            # or a cancellation ignore a complete delivery); reconcile first (deliver rule 7).
            self._close()
            self._unknown.add(delivery.id)
            self._reconciled = False
            self._hold(self._backoff())
            _log.warning(
                "delivery.outcome_unknown",
                delivery=delivery.id,
                recipient=self.partner_id,
                agreement=delivery.agreement,
                error=getattr(unknown.cause, "message", str(unknown.cause)),
            )
            return False
        except TransportError as error:
            self._close()
            if error.transient:
                self._transient(delivery, error)
            else:
                self._park_all(error, delivery)
            return False
        except (RecipientKeyError, ManifestFieldError) as error:
            self._park_all(error, delivery)
            return False
        except Exception as error:  # noqa: BLE001 - rule 7: a strike, never the end of the lane
            self._close()
            self._strike(delivery, error)
            return True
        self._probe_delay = ctx.settings.park_probe_seconds
        self._failures = 0
        record = sent.delivery
        _log.info(
            "delivery.sent",
            delivery=record.id,
            dataset=record.dataset.value,
            agreement=record.agreement,
            recipient=record.recipient,
            remote_name=record.remote_name,
            bytes=record.size,
            ciphertext_sha256=record.ciphertext_sha256,
            attempt=record.attempts,
            duration_s=round(sent.duration / timedelta(seconds=1), 3),
        )
        return True

    def _current(self, delivery: Delivery) -> Delivery:
        return self.ctx.ledger.get_delivery(delivery.id)

    def _transient(self, delivery: Delivery, error: TransportError) -> None:
        ctx = self.ctx
        current = self._current(delivery)
        now = ctx.now()
        retry_at = next_attempt_at(
            max(current.attempts, 1),
            now,
            ctx.rng,
            base=ctx.settings.retry_base,
            cap=ctx.settings.retry_cap,
        )
        if current.state is DeliveryState.UPLOADING:
            ctx.ledger.apply(
                delivery.id, lifecycle.UploadFailed(reason=error.message, retry_at=retry_at), now
            )
        self._hold(max((retry_at - now).total_seconds(), self._backoff()))
        _log.warning(
            "delivery.failed",
            delivery=delivery.id,
            agreement=delivery.agreement,
            recipient=self.partner_id,
            attempt=current.attempts,
            error=error.message,
            retry_at=retry_at.isoformat(),
        )

    def _park_all(self, error: Exception, delivery: Delivery | None = None) -> None:
        ctx = self.ctx
        now = ctx.now()
        reason = park_reason(error)
        message = getattr(error, "message", str(error))
        with ctx.ledger.transaction():
            for waiting in ctx.ledger.deliveries(
                DeliveryState.PENDING,
                DeliveryState.RETRY_WAIT,
                DeliveryState.UPLOADING,
                recipient=self.partner_id,
            ):
                if waiting.state is DeliveryState.UPLOADING and (
                    delivery is None or waiting.id != delivery.id
                ):
                    continue  # another attempt's leftovers are the reconciler's
                ctx.ledger.apply(waiting.id, lifecycle.Parked(reason=message), now)
            # A host key mismatch is about the hub, not the partner: one incident for all
            # lanes (at high severity in the log), however many partners it stops.
            hub_wide = reason is ReasonCode.HOST_KEY_MISMATCH
            incident = ctx.ledger.open_incident(
                reason=reason,
                now=now,
                partner=None if hub_wide else self.partner_id,
                context={"error": message},
                dedupe_key=f"parked:{'hub' if hub_wide else self.partner_id}:{reason.value}",
            )
        self._hold(self._probe_delay)
        self._probe_delay = min(max(self._probe_delay * 2, 1.0), _PROBE_CAP)
        _log.error(
            "delivery.parked",
            partner=self.partner_id,
            reason_code=reason.value,
            error=message,
            hint=getattr(error, "hint", None),
            incident=incident.id,
        )

    def _strike(self, delivery: Delivery, error: Exception) -> None:
        ctx = self.ctx
        current = self._current(delivery)
        now = ctx.now()
        text = f"{type(error).__name__}: {error}"
        _log.error(
            "delivery.error",
            delivery=delivery.id,
            recipient=self.partner_id,
            agreement=delivery.agreement,
            error=text,
            exc_info=True,
        )
        if current.state is not DeliveryState.UPLOADING:
            self._hold(ctx.settings.retry_base_seconds)
            return
        retry_at = next_attempt_at(
            max(current.attempts, 1),
            now,
            ctx.rng,
            base=ctx.settings.retry_base,
            cap=ctx.settings.retry_cap,
        )
        current = ctx.ledger.apply(
            delivery.id, lifecycle.UploadInterrupted(reason=text, retry_at=retry_at), now
        )
        poison_if_struck_out(ctx, current)
