"""``exchange correct``, ``exchange corrections`` and ``exchange holders`` as operations that
return data and never print (protocol §8).

Rules:

1. A correction names a dataset in the ledger and supersedes its *latest* version; a dataset
   the ledger does not know is refused with NotFoundError, an older version with
   RefusedError, both before anything is written.
2. The file is checked like any intake (the agreement's pure rules from
   :mod:`exchange.core.intake`: format, size, header columns, encoding) while it is copied,
   read once, into the spool (content-addressed, 0400, durable before the ledger commit). The
   file given is read, never moved or removed. Content identical to the version it corrects
   is refused: nothing would change.
3. The new version (kind ``correction``, with the complaint reference and the reason) and one
   pending delivery per recipient are committed in one ledger transaction; recipients are
   chosen by :func:`exchange.core.corrections.correction_recipients` from the ledger's
   deliveries of the earlier versions. Deliveries of earlier versions that have not left yet
   are superseded in the same transaction (:meth:`Ledger.add_version`).
4. When it goes is the daemon's decision (:mod:`exchange.service.due`): at its next cycle
   under ``corrections = "immediate"`` (the default), at the agreement's next run under
   ``corrections = "next-run"``. This module only records.
5. Nothing here talks to the hub: progress is read from the ledger, where the daemon records
   the partners' verified receipts.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from exchange import fsutil
from exchange.config import Agreement, Config
from exchange.core.corrections import (
    CorrectionFacts,
    CorrectionProgress,
    DeliveryFact,
    Holding,
    correction_recipients,
    holdings,
    open_only,
    progress,
)
from exchange.core.delivery import DeliveryState
from exchange.core.intake import Candidate, FileKind, IntakeRules, Refused, content_checker, decide
from exchange.core.naming import delivery_id_from_hex
from exchange.errors import ConfigError, NotFoundError, RefusedError, UsageError
from exchange.ledger import LEDGER_FILENAME, Dataset, Delivery, Ledger, Version
from exchange.manifest import Correction
from exchange.model import DatasetId, Sha256, VersionKind
from exchange.outbox import spool_temp, spooling, write_temp

__all__ = [
    "Corrected",
    "HoldersReport",
    "correct",
    "corrections_json",
    "holders",
    "ledger_file",
    "log_overdue",
    "open_corrections",
]

_log = structlog.get_logger()
_READ = 1 << 20


def ledger_file(cfg: Config) -> Path:
    """The workspace's ledger (``state/ledger.sqlite3``)."""
    return cfg.folders.state / LEDGER_FILENAME


# --- reading the ledger as facts ---------------------------------------------------------------


def _receipt_status(ledger: Ledger, delivery: Delivery) -> str | None:
    # The ledger records a verified receipt's status as the reason of its event row.
    if delivery.state is DeliveryState.REJECTED:
        return "rejected"
    if delivery.state is not DeliveryState.ACKNOWLEDGED:
        return None
    for event in reversed(ledger.events(delivery.id)):
        if event.event == "ReceiptAccepted":
            return event.reason
    return None


def _facts(ledger: Ledger, deliveries: Iterable[Delivery]) -> list[DeliveryFact]:
    numbers: dict[int, int] = {}
    facts = []
    for delivery in deliveries:
        if delivery.version not in numbers:
            numbers[delivery.version] = ledger.get_version(delivery.version).number
        facts.append(
            DeliveryFact(
                delivery=delivery.id,
                recipient=delivery.recipient,
                version=numbers[delivery.version],
                state=delivery.state,
                receipt_status=_receipt_status(ledger, delivery),
                sent_at=delivery.sent_at,
                acknowledged_at=delivery.acknowledged_at,
            )
        )
    return facts


def _dataset_id(ledger: Ledger, text: str) -> DatasetId:
    """A dataset id as given, or the one dataset whose original file name is ``text``."""
    if DatasetId.is_valid(text):
        return DatasetId(text)
    named: dict[DatasetId, datetime] = {}
    for delivery in ledger.deliveries():
        if delivery.dataset not in named:
            record = ledger.get_dataset(delivery.dataset)
            if record.original_name == os.fsencode(text):
                named[record.id] = record.created_at
    if len(named) == 1:
        return next(iter(named))
    if not named:
        raise NotFoundError(
            f"dataset {text!r}: no dataset id or file name sent under that name",
            hint="give the dataset's id (ds-<32 hex digits>), from the daemon's dataset.recorded "
            "log line or 'exchange audit export', or the file name it was sent under",
        )
    choices = ", ".join(
        f"{d} (taken {at:%Y-%m-%d %H:%M})" for d, at in sorted(named.items(), key=lambda kv: kv[1])
    )
    raise RefusedError(
        f"dataset {text!r}: {len(named)} datasets were sent under that name: {choices}",
        hint="give the id of the one to correct",
    )


def _of_dataset(ledger: Ledger, dataset: DatasetId) -> list[Delivery]:
    return [d for d in ledger.deliveries() if d.dataset == dataset]


def _known(ledger: Ledger, dataset: DatasetId) -> Dataset:
    try:
        return ledger.get_dataset(dataset)
    except NotFoundError as error:
        raise NotFoundError(
            f"{error.message}: this organisation never sent it",
            hint="run 'exchange status --json' to see the datasets sent; a dataset received "
            "from a partner is corrected by its sender",
        ) from None


def _agreement(cfg: Config, agreement_id: str, dataset: DatasetId) -> Agreement:
    agreement = cfg.agreements.get(agreement_id)
    if agreement is None:
        raise ConfigError(
            f"dataset {dataset}: its agreement {agreement_id!r} is no longer configured",
            hint=f"restore config/agreements/{agreement_id}.toml to correct it",
        )
    return agreement


# --- exchange correct ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Corrected:
    version: Version
    superseded: Version
    recipients: tuple[str, ...]
    timing: str  # immediate | next-run

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.version.dataset.value,
            "version": self.version.number,
            "supersedes": self.superseded.number,
            "complaint": self.version.complaint_ref,
            "reason": self.version.reason,
            "sha256": self.version.sha256.hex,
            "size": self.version.size,
            "recipients": list(self.recipients),
            "corrections": self.timing,
        }


def _rules(agreement: Agreement) -> IntakeRules:
    return IntakeRules(
        formats=agreement.formats,
        allowed_fields=agreement.allowed_fields,
        max_size_bytes=agreement.max_size_bytes,
        allow_empty=agreement.allow_empty,
    )


def _spool(cfg: Config, agreement: Agreement, file: Path) -> tuple[Sha256, int, Path]:
    """Check ``file`` against the agreement while copying it into the spool (rule 2)."""
    rules = _rules(agreement)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"{file}: no such file") from None
    except OSError as error:
        raise RefusedError(
            f"{file}: cannot open: {error.strerror}",
            hint="give a regular file (not a link) that this user may read",
        ) from None
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        decision = decide(
            rules,
            Candidate(os.fsencode(file.name), info.st_size, FileKind.from_mode(info.st_mode), 1),
        )
        if isinstance(decision, Refused):
            raise RefusedError(
                f"{file}: refused by agreement {agreement.id}: {decision.reason.value}: "
                f"{decision.detail}",
                hint="a correction is checked like any dataset; fix the file and run it again",
            )
        os.set_blocking(source.fileno(), True)
        spool_dir = cfg.folders.spool / agreement.id
        spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with spooling(spool_dir):
            temp = spool_temp(spool_dir, "correct")  # removed at start-up if we die
            digest, size = hashlib.sha256(), 0
            checker = None if decision.empty else content_checker(rules, decision)
            try:
                with write_temp(temp) as out:
                    while chunk := source.read(_READ):
                        digest.update(chunk)
                        size += len(chunk)
                        if checker is not None and (refused := checker.feed(chunk)) is not None:
                            raise RefusedError(
                                f"{file}: refused by agreement {agreement.id}: "
                                f"{refused.reason.value}: {refused.detail}"
                            )
                        out.write(chunk)
                    if checker is not None and isinstance(verdict := checker.finish(), Refused):
                        raise RefusedError(
                            f"{file}: refused by agreement {agreement.id}: "
                            f"{verdict.reason.value}: {verdict.detail}"
                        )
                sha = Sha256.of_digest(digest.digest())
                final = spool_dir / sha.hex
                if not (final.exists() and stat.S_ISREG(final.lstat().st_mode)):
                    temp.replace(final)
                    fsutil.fsync_dir(spool_dir)
            finally:
                temp.unlink(missing_ok=True)
    return sha, size, final


def _may_receive_new(cfg: Config, agreement: Agreement, now: datetime) -> frozenset[str]:
    today = now.astimezone(agreement.schedule.zone).date()
    allowed = set()
    for partner_id in agreement.recipients:
        partner = cfg.partners.get(partner_id)
        stop = None if partner is None else partner.no_new_data_from
        if partner is not None and (stop is None or today < stop):
            allowed.add(partner_id)
    return frozenset(allowed)


def correct(
    cfg: Config,
    ledger: Ledger,
    dataset: str,
    file: Path,
    *,
    complaint: str,
    reason: str,
    now: datetime,
    supersedes: int | None = None,
) -> Corrected:
    """Record a correction of ``dataset`` (its id, or the file name it was sent under when
    that names one dataset) from ``file`` (rules 1-4). ``supersedes`` names the version it
    corrects (the latest when None; any other is refused)."""
    dataset_id = _dataset_id(ledger, dataset)
    try:
        Correction(supersedes=1, complaint=complaint, reason=reason)
    except ValueError as error:
        raise UsageError(
            f"--complaint/--reason: {error}",
            hint="give the complaint reference (up to 100 bytes) and the reason (up to "
            "1000 bytes), without control characters",
        ) from None
    record = _known(ledger, dataset_id)
    versions = ledger.versions_of(dataset_id)
    latest = versions[-1]
    if supersedes is not None and supersedes != latest.number:
        known = {v.number for v in versions}
        if supersedes not in known:
            raise NotFoundError(
                f"dataset {dataset_id}: has no version {supersedes} (latest is {latest.number})",
                hint="run 'exchange holders DATASET' to see its versions",
            )
        raise RefusedError(
            f"dataset {dataset_id}: version {supersedes} is not the latest version "
            f"({latest.number}); a correction supersedes the latest version only",
            hint=f"correct version {latest.number}, which holds the data partners have now",
        )
    agreement = _agreement(cfg, record.agreement, dataset_id)
    sha, size, spooled = _spool(cfg, agreement, file)
    if sha == latest.sha256:
        raise RefusedError(
            f"{file}: identical to version {latest.number} of dataset {dataset_id}; "
            "nothing to correct",
            hint="give the revised file",
        )
    earlier = _facts(ledger, _of_dataset(ledger, dataset_id))
    recipients = correction_recipients(earlier, _may_receive_new(cfg, agreement, now))
    version = ledger.add_version(
        dataset=dataset_id,
        sha256=sha,
        size=size,
        spool_path=str(spooled),
        kind=VersionKind.CORRECTION,
        reason=reason,
        recipients=[(delivery_id_from_hex(secrets.token_hex(16)), r) for r in recipients],
        now=now,
        supersedes=latest.id,
        complaint_ref=complaint,
    )
    _log.info(
        "correction.recorded",
        agreement=agreement.id,
        dataset=dataset_id.value,
        version=version.number,
        detail=f"supersedes version {latest.number}",
        sha256=sha.hex,
        size=size,
        count=len(recipients),
        state=agreement.corrections,
    )
    return Corrected(version, latest, recipients, agreement.corrections)


# --- exchange corrections ----------------------------------------------------------------------


def open_corrections(
    cfg: Config, ledger: Ledger, now: datetime, *, include_complete: bool = False
) -> list[CorrectionProgress]:
    """Every correction not yet complete (or all with ``include_complete``), oldest first. A
    correction superseded by a later version is no longer tracked: the later one is."""
    by_version: dict[int, list[Delivery]] = {}
    versions_seen: dict[str, set[int]] = {}
    for delivery in ledger.deliveries():
        by_version.setdefault(delivery.version, []).append(delivery)
        versions_seen.setdefault(delivery.dataset.value, set()).add(delivery.version)
    found: list[CorrectionProgress] = []
    # Only a dataset delivered in two versions or more can have a correction with anyone to
    # wait for (one that nobody held is complete at once), so 'exchange status' stays cheap
    # on a ledger of single-version datasets.
    for dataset_id in sorted(d for d, seen in versions_seen.items() if len(seen) > 1):
        versions = ledger.versions_of(DatasetId(dataset_id))
        latest = versions[-1]
        if latest.kind is not VersionKind.CORRECTION or latest.supersedes is None:
            continue
        superseded = ledger.get_version(latest.supersedes)
        record = ledger.get_dataset(latest.dataset)
        agreement = cfg.agreements.get(record.agreement)
        window = agreement.acknowledgement_window if agreement else timedelta(days=1)
        facts = CorrectionFacts(
            dataset=dataset_id,
            agreement=record.agreement,
            version=latest.number,
            supersedes=superseded.number,
            complaint=latest.complaint_ref,
            reason=latest.reason,
            created_at=latest.created_at,
            deliveries=tuple(_facts(ledger, by_version.get(latest.id, []))),
        )
        found.append(progress(facts, window, now))
    if include_complete:
        return sorted(found, key=lambda p: (p.facts.created_at, p.facts.dataset))
    return open_only(found)


def log_overdue(items: Iterable[CorrectionProgress]) -> int:
    """Log a warning per overdue partner of each correction; returns how many."""
    count = 0
    for item in items:
        for partner in item.partners:
            if partner.overdue:
                count += 1
                _log.warning(
                    "correction.overdue",
                    agreement=item.facts.agreement,
                    dataset=item.facts.dataset,
                    version=item.facts.version,
                    recipient=partner.recipient,
                    delivery=partner.delivery,
                    state=partner.state.value,
                    duration_s=int(item.age.total_seconds()),
                )
    return count


def _seconds(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds())


def corrections_json(items: Iterable[CorrectionProgress]) -> list[dict[str, Any]]:
    """The JSON shape of ``exchange corrections --json`` (and of status's open corrections)."""
    return [
        {
            "dataset": item.facts.dataset,
            "agreement": item.facts.agreement,
            "version": item.facts.version,
            "supersedes": item.facts.supersedes,
            "complaint": item.facts.complaint,
            "reason": item.facts.reason,
            "created_at": item.facts.created_at.isoformat(),
            "age_seconds": _seconds(item.age),
            "complete": item.complete,
            "overdue": item.overdue,
            "acknowledged": list(item.done),
            "outstanding": list(item.outstanding),
            "partners": [
                {
                    "partner": p.recipient,
                    "delivery": p.delivery,
                    "state": p.state.value,
                    "receipt": p.receipt_status,
                    "done": p.done,
                    "had_for_seconds": _seconds(p.had_for),
                    "overdue": p.overdue,
                }
                for p in item.partners
            ],
        }
        for item in items
    ]


# --- exchange holders --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldersReport:
    dataset: DatasetId
    agreement: str
    versions: tuple[Version, ...]
    holders: tuple[Holding, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.value,
            "agreement": self.agreement,
            "latest": self.versions[-1].number,
            "versions": [
                {
                    "version": v.number,
                    "kind": v.kind.value,
                    "sha256": v.sha256.hex,
                    "created_at": v.created_at.isoformat(),
                    "complaint": v.complaint_ref,
                    "reason": v.reason,
                }
                for v in self.versions
            ],
            "holders": [
                {
                    "partner": h.recipient,
                    "version": h.version,
                    "state": h.state.value,
                    "confirmed": h.confirmed,
                    "receipt": h.receipt_status,
                    "since": None if h.since is None else h.since.isoformat(),
                }
                for h in self.holders
            ],
        }


def holders(ledger: Ledger, dataset: str) -> HoldersReport:
    """Who holds which version of ``dataset`` now (core.corrections rule 4)."""
    dataset_id = _dataset_id(ledger, dataset)
    record = _known(ledger, dataset_id)
    versions = tuple(ledger.versions_of(dataset_id))
    facts = _facts(ledger, _of_dataset(ledger, dataset_id))
    return HoldersReport(dataset_id, record.agreement, versions, holdings(facts))
