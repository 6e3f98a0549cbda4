"""From an outbox candidate to a ledger version with one pending delivery per recipient.

Rules (docs/DESIGN.md, write-ordering invariants 1 and 2):

1. A candidate is taken only once it is stable (:mod:`exchange.core.stability`, monotonic
   clock). The outbox package does the taking; this module decides what the ledger says.
2. Order: the spool copy is durable (``Outbox.take``), then the ledger commits the dataset,
   its version and its deliveries (crash point ``intake.after_ledger_commit``), then the outbox
   original is removed.
3. The same content dropped again under the same agreement is a duplicate: incident
   ``duplicate``, the file goes to quarantine, nothing is re-sent. A retake after a crash
   between the ledger commit and the removal (same name, and the file's change time not later
   than the ledger's record) is not a duplicate: the original is just removed.
4. Every refusal is recorded in the ledger (quarantine row and an incident); so is every
   quarantined entry found at start that the ledger does not know (a crash at
   ``quarantine.after_move``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

import structlog

from exchange.config import Agreement
from exchange.core.intake import IntakeRules
from exchange.core.naming import delivery_id_from_hex
from exchange.core.stability import Pending, StabilityTracker, Stable
from exchange.ledger import DuplicateContent, Version
from exchange.model import DatasetId, ReasonCode
from exchange.outbox import Outbox, Quarantined, Retry, Skipped, Taken
from exchange.service.context import Context, crash_point
from exchange.watcher import CandidateName

_log = structlog.get_logger()


def rules_for_agreement(agreement: Agreement) -> IntakeRules:
    """The pure intake rules of an agreement."""
    return IntakeRules(
        formats=agreement.formats,
        allowed_fields=agreement.allowed_fields,
        max_size_bytes=agreement.max_size_bytes,
        allow_empty=agreement.allow_empty,
    )


def new_delivery_ids(recipients: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(delivery_id_from_hex(secrets.token_hex(16)), r) for r in recipients]


def record_quarantined(ctx: Context, item: Quarantined) -> None:
    """Ledger row and incident for a quarantined entry, once per path (rule 4)."""
    path = str(item.path)
    if any(q.path == path for q in ctx.ledger.quarantined(item.agreement)):
        return
    now = ctx.now()
    with ctx.ledger.transaction():
        incident = ctx.ledger.open_incident(
            reason=item.reason,
            now=now,
            agreement=item.agreement,
            context={"size": item.size, "sha256": None if item.sha256 is None else item.sha256.hex},
        )
        ctx.ledger.record_quarantine(
            agreement=item.agreement,
            original_name=item.original_name,
            path=path,
            reason=item.reason,
            detail=item.detail,
            now=now,
            sha256=item.sha256,
            size=item.size,
            incident=incident.id,
        )


class Intake:
    """The outboxes held open, and the stability tracks of what is in them. One thread."""

    def __init__(self, ctx: Context, outboxes: Mapping[str, Outbox]) -> None:
        self.ctx = ctx
        self.outboxes = dict(outboxes)
        self.tracker: StabilityTracker[CandidateName] = StabilityTracker(
            ctx.settings.settle_seconds
        )
        #: Candidates being watched, with the monotonic time worth looking again.
        self.watching: dict[CandidateName, float] = {}

    def start_up(self) -> None:
        """Remove our leftover temporaries and record quarantined entries the ledger lacks."""
        for outbox in self.outboxes.values():
            removed = outbox.remove_stale_temps()
            if removed:
                _log.info("intake.temps_removed", agreement=outbox.agreement, count=removed)
            for item in outbox.quarantined():
                record_quarantined(self.ctx, item)

    def pause(self, agreement_id: str) -> None:
        """Stop looking at an agreement's outbox (it moved under us)."""
        for candidate in [c for c in self.watching if c.agreement == agreement_id]:
            self._done(candidate)
        self.outboxes.pop(agreement_id, None)

    def offer(self, candidate: CandidateName) -> None:
        """A name worth a look (an event or a rescan)."""
        if candidate.agreement in self.outboxes and candidate not in self.watching:
            self.watching[candidate] = self.ctx.clock.monotonic()

    def retain(self, found: list[CandidateName]) -> None:
        self.tracker.retain(found)

    def poll(self) -> float | None:
        """Look at every candidate whose time has come; return the next time worth a look."""
        now = self.ctx.clock.monotonic()
        for candidate, ready_at in sorted(self.watching.items(), key=lambda kv: kv[1]):
            if self.ctx.stopping.is_set():
                break
            if ready_at <= now:
                self._look(candidate)
        return min(self.watching.values(), default=None)

    def _look(self, candidate: CandidateName) -> None:
        outbox = self.outboxes[candidate.agreement]
        observation = outbox.observe(candidate.name)
        if observation is None:
            self._done(candidate)
            return
        verdict = self.tracker.observe(candidate, observation, self.ctx.clock.monotonic())
        if isinstance(verdict, Pending):
            self.watching[candidate] = verdict.ready_at
            return
        assert isinstance(verdict, Stable)
        self._take(outbox, candidate)

    def _done(self, candidate: CandidateName) -> None:
        self.watching.pop(candidate, None)
        self.tracker.forget(candidate)

    def _take(self, outbox: Outbox, candidate: CandidateName) -> None:
        outcome = outbox.take(
            candidate.name,
            rules_for_agreement(self.ctx.config.agreements[candidate.agreement]),
            crash_point=crash_point,
        )
        if isinstance(outcome, Skipped):
            self._done(candidate)
        elif isinstance(outcome, Quarantined):
            record_quarantined(self.ctx, outcome)
            self._done(candidate)
        elif isinstance(outcome, Retry):
            self._retry(candidate, outcome)
        else:
            self._accept(outbox, candidate, outcome)

    def _retry(self, candidate: CandidateName, outcome: Retry) -> None:
        # A changed file starts its settle time again; a permission or I/O problem waits
        # longer and is an incident (one per file while it lasts), never a crash loop.
        self.tracker.forget(candidate)
        delay = self.ctx.settings.settle_seconds
        if outcome.reason is not ReasonCode.CHANGED:
            delay = max(delay, 60.0)
            self.ctx.ledger.open_incident(
                reason=outcome.reason or ReasonCode.PERMISSION,
                now=self.ctx.now(),
                agreement=candidate.agreement,
                context={"detail": outcome.detail},
                dedupe_key=f"intake-deferred:{candidate.agreement}:{candidate.name.hex()}",
            )
        self.watching[candidate] = self.ctx.clock.monotonic() + delay

    def _accept(self, outbox: Outbox, candidate: CandidateName, taken: Taken) -> None:
        ctx = self.ctx
        agreement = ctx.config.agreements[taken.agreement]
        earlier = ctx.ledger.versions_with_content(taken.agreement, taken.sha256)
        if earlier:
            if self._is_replay(taken, earlier[0]):
                self._remove(outbox, candidate, taken)
                return
            self._duplicate(outbox, candidate, taken, earlier[0])
            return
        try:
            version = ctx.ledger.record_intake(
                dataset=DatasetId(f"ds-{secrets.token_hex(16)}"),
                agreement=taken.agreement,
                original_name=taken.original_name,
                sha256=taken.sha256,
                size=taken.size,
                spool_path=str(taken.spool_path),
                recipients=new_delivery_ids(agreement.recipients),
                now=ctx.now(),
            )
        except DuplicateContent as error:
            self._duplicate(outbox, candidate, taken, error.existing)
            return
        crash_point("intake.after_ledger_commit")
        _log.info(
            "dataset.recorded",
            agreement=taken.agreement,
            dataset=version.dataset.value,
            version=version.number,
            sha256=taken.sha256.hex,
            size=taken.size,
            count=len(agreement.recipients),
            state="empty" if taken.empty else "pending",
        )
        self._remove(outbox, candidate, taken)

    def _is_replay(self, taken: Taken, version: Version) -> bool:
        dataset = self.ctx.ledger.get_dataset(version.dataset)
        ctime = datetime.fromtimestamp(taken.identity[4] / 1e9, UTC)
        return dataset.original_name == taken.original_name and ctime <= version.created_at

    def _remove(self, outbox: Outbox, candidate: CandidateName, taken: Taken) -> None:
        removed = outbox.remove_original(taken, crash_point=crash_point)
        if isinstance(removed, Retry):
            self._retry(candidate, removed)
        else:
            self._done(candidate)

    def _duplicate(
        self, outbox: Outbox, candidate: CandidateName, taken: Taken, existing: Version
    ) -> None:
        detail = (
            f"the same content was already taken as dataset {existing.dataset} version "
            f"{existing.number}; not sent again (declare a correction to re-send)"
        )
        moved = outbox.quarantine_original(
            taken, ReasonCode.DUPLICATE, detail, crash_point=crash_point
        )
        if isinstance(moved, Quarantined):
            record_quarantined(self.ctx, moved)
            self._done(candidate)
        elif isinstance(moved, Retry):
            self._retry(candidate, moved)
        else:
            self._done(candidate)
