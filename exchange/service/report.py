"""``exchange status`` and ``exchange send`` as functions that return data and never print.

Rules:

1. Status reads the ledger and the configuration only; it never talks to the hub, so it
   answers in milliseconds and can drive monitoring. It needs attention (exit 1) when an
   incident is open, or a delivery is parked, poisoned or rejected.
2. ``send`` checks the file against the agreement with the same pure rules as intake, copies
   it into the spool (content-addressed, durable, read-only), and records a ``manual``
   version with its reason (and consent-override note) and one pending delivery per
   recipient. The running daemon sends it at its next cycle, outside the schedule and the
   release windows but never before commencement, after expiry or past a withdrawal.
   The file given is read, never moved or removed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from exchange import fsutil
from exchange.config import Config
from exchange.core.delivery import TERMINAL, DeliveryState
from exchange.core.intake import Candidate, FileKind, Refused, content_checker, decide
from exchange.core.schedule import next_run
from exchange.corrections import corrections_json, open_corrections
from exchange.errors import NotFoundError, RefusedError, UsageError
from exchange.ledger import Ledger, Version
from exchange.model import DatasetId, Sha256, VersionKind
from exchange.outbox import spool_temp, spooling, write_temp
from exchange.service.context import crash_point
from exchange.service.intake import new_delivery_ids, rules_for_agreement

_ATTENTION_STATES = (DeliveryState.PARKED, DeliveryState.POISONED, DeliveryState.REJECTED)
_FAILING_STATES = (DeliveryState.RETRY_WAIT, *_ATTENTION_STATES)


@dataclass(frozen=True, slots=True)
class StatusReport:
    generated_at: datetime
    agreements: list[dict[str, Any]] = field(default_factory=list)
    partners: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    corrections: list[dict[str, Any]] = field(default_factory=list)  # open ones (protocol §8)
    attention: list[str] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        return bool(self.attention)

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "needs_attention": self.needs_attention,
            "attention": list(self.attention),
            "agreements": self.agreements,
            "partners": self.partners,
            "failures": self.failures,
            "quarantined": self.quarantined,
            "incidents": self.incidents,
            "corrections": self.corrections,
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def status(cfg: Config, ledger: Ledger, now: datetime) -> StatusReport:
    """Everything ops needs to see, from the ledger and config (rule 1)."""
    report = StatusReport(generated_at=now)
    deliveries = ledger.deliveries()
    for agreement in cfg.agreements.values():
        mine = [d for d in deliveries if d.agreement == agreement.id]
        waiting = [d for d in mine if d.state not in TERMINAL and d.state is not DeliveryState.SENT]
        last = ledger.last_run(agreement.id)
        report.agreements.append(
            {
                "id": agreement.id,
                "schedule": agreement.schedule.describe(),
                "next_run": _iso(next_run(agreement.schedule, now)),
                "last_run": None if last is None else _iso(last.due_at),
                "recipients": list(agreement.recipients),
                "pending_datasets": len({d.dataset.value for d in waiting}),
                "pending_deliveries": len(waiting),
            }
        )
    for partner_id in sorted(cfg.partners):
        mine = [d for d in deliveries if d.recipient == partner_id]
        sent = [d for d in mine if d.sent_at is not None]
        latest = max(sent, key=lambda d: d.sent_at or now, default=None)
        counts: dict[str, int] = {}
        for d in mine:
            counts[d.state.value] = counts.get(d.state.value, 0) + 1
        report.partners.append(
            {
                "id": partner_id,
                "last_delivery": None
                if latest is None
                else {
                    "delivery": latest.id,
                    "dataset": latest.dataset.value,
                    "agreement": latest.agreement,
                    "sent_at": _iso(latest.sent_at),
                    "bytes": latest.size,
                },
                "states": counts,
            }
        )
    for d in deliveries:
        if d.state in _FAILING_STATES:
            report.failures.append(
                {
                    "delivery": d.id,
                    "dataset": d.dataset.value,
                    "agreement": d.agreement,
                    "recipient": d.recipient,
                    "state": d.state.value,
                    "attempts": d.attempts,
                    "reason": d.last_error,
                    "next_attempt_at": _iso(d.next_attempt_at),
                }
            )
        if d.state in _ATTENTION_STATES:
            report.attention.append(f"delivery {d.id} to {d.recipient} is {d.state.value}")
    for q in ledger.quarantined():
        report.quarantined.append(
            {
                "agreement": q.agreement,
                "path": q.path,
                "reason": q.reason.value,
                "detail": q.detail,
                "at": _iso(q.at),
                "incident": q.incident,
            }
        )
    for incident in ledger.incidents(open_only=True):
        report.incidents.append(
            {
                "id": incident.id,
                "reason": incident.reason.value,
                "agreement": incident.agreement,
                "partner": incident.partner,
                "opened_at": _iso(incident.opened_at),
                "occurrences": incident.occurrences,
            }
        )
        report.attention.append(f"incident {incident.id} ({incident.reason.value}) is open")
    # Open corrections and who has not replaced the data yet (exchange.corrections).
    report.corrections.extend(corrections_json(open_corrections(cfg, ledger, now)))
    report.attention.extend(
        f"correction {c['dataset']} version {c['version']} is overdue at "
        f"{', '.join(c['outstanding'])}"
        for c in report.corrections
        if c["overdue"]
    )
    return report


# --- exchange send -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Queued:
    version: Version
    recipients: tuple[str, ...]


def send(
    cfg: Config,
    ledger: Ledger,
    file: Path,
    *,
    agreement_id: str,
    reason: str,
    override_note: str | None,
    now: datetime,
) -> Queued:
    """Queue an out-of-schedule send (rule 2)."""
    agreement = cfg.agreements.get(agreement_id)
    if agreement is None:
        known = ", ".join(sorted(cfg.agreements)) or "none"
        raise NotFoundError(f"agreement {agreement_id!r}: not configured (known: {known})")
    if not reason.strip():
        raise UsageError("--reason: give the reason for sending out of schedule")
    rules = rules_for_agreement(agreement)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"{file}: no such file") from None
    except OSError as error:
        raise RefusedError(f"{file}: cannot open: {error.strerror}") from None
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        kind = FileKind.from_mode(info.st_mode)
        decision = decide(
            rules, Candidate(os.fsencode(file.name), info.st_size, kind, info.st_nlink)
        )
        if isinstance(decision, Refused):
            raise RefusedError(
                f"{file}: refused by agreement {agreement_id}: {decision.reason.value}: {decision.detail}"
            )
        os.set_blocking(source.fileno(), True)
        spool_dir = cfg.folders.spool / agreement_id
        spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with spooling(spool_dir):
            temp = spool_temp(spool_dir, "send")  # removed at start-up if we die
            digest, size = hashlib.sha256(), 0
            checker = None if decision.empty else content_checker(rules, decision)
            try:
                with write_temp(temp) as out:
                    while chunk := source.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
                        if checker is not None and (refused := checker.feed(chunk)) is not None:
                            raise RefusedError(
                                f"{file}: refused: {refused.reason.value}: {refused.detail}"
                            )
                        out.write(chunk)
                    if checker is not None and isinstance(verdict := checker.finish(), Refused):
                        raise RefusedError(
                            f"{file}: refused: {verdict.reason.value}: {verdict.detail}"
                        )
                crash_point("send.after_spool_temp")
                sha = Sha256.of_digest(digest.digest())
                final = spool_dir / sha.hex
                existing = final.exists() and stat.S_ISREG(final.lstat().st_mode)
                if not existing:
                    temp.replace(final)
                    fsutil.fsync_dir(spool_dir)
            finally:
                temp.unlink(missing_ok=True)
    version = ledger.record_intake(
        dataset=DatasetId(f"ds-{secrets.token_hex(16)}"),
        agreement=agreement_id,
        original_name=os.fsencode(file.name),
        sha256=sha,
        size=size,
        spool_path=str(final),
        recipients=new_delivery_ids(agreement.recipients),
        now=now,
        kind=VersionKind.MANUAL,
        reason=reason,
        override_note=override_note,
    )
    return Queued(version, agreement.recipients)
