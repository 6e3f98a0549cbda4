"""``exchange audit export``: what was shared with whom, when, under which agreement and legal
basis, and why: the record the information-governance team asks for (SPEC "Ops"; protocol §3
"a decision to share information and the reasoning behind it should be recorded").

Rules:

1. Built from the ledger (what happened) joined with the configuration (what each agreement
   and partner is). An agreement or partner no longer in the configuration is still reported,
   marked as such, never dropped: the record outlives the agreement.
2. One row per delivery that reached the hub since the date (``sent_at``), and one per
   dataset received from a partner since then. Deliveries never sent are not sharing.
3. "Why": the agreement's purpose for scheduled sends; for a manual send or a correction also
   the written reason, the override-of-consent note and the complaint reference (protocol §8,
   Appendix A).
4. Returns data only; the command renders it. File names are shown with undecodable bytes
   escaped, never raw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from exchange.config import Config
from exchange.ledger import Ledger

__all__ = ["SharedRecord", "export"]


@dataclass(frozen=True, slots=True)
class SharedRecord:
    direction: str  # "sent" | "received"
    at: datetime
    agreement: str
    agreement_title: str | None  # None: no longer in the configuration
    purpose: str | None
    legal_basis: tuple[str, ...]
    data_categories: tuple[str, ...]
    classification: str | None
    partner: str
    partner_name: str | None
    dataset: str
    version: int
    file_name: str | None
    sha256: str | None
    size: int | None
    kind: str  # regular | manual | correction (received: as the manifest said)
    reason: str | None
    override_note: str | None
    complaint_ref: str | None
    state: str
    acknowledged_at: datetime | None

    def to_json(self) -> dict[str, object]:
        value = asdict(self)
        value["at"] = self.at.isoformat()
        value["acknowledged_at"] = (
            None if self.acknowledged_at is None else self.acknowledged_at.isoformat()
        )
        value["legal_basis"] = list(self.legal_basis)
        value["data_categories"] = list(self.data_categories)
        return value


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def export(cfg: Config, ledger: Ledger, since: datetime) -> list[SharedRecord]:
    """Everything shared (sent or received) at or after ``since``, oldest first."""
    records: list[SharedRecord] = []
    for delivery in ledger.deliveries():
        if delivery.sent_at is None or delivery.sent_at < since:
            continue
        version = ledger.get_version(delivery.version)
        dataset = ledger.get_dataset(delivery.dataset)
        agreement = cfg.agreements.get(delivery.agreement)
        partner = cfg.partners.get(delivery.recipient)
        records.append(
            SharedRecord(
                direction="sent",
                at=delivery.sent_at,
                agreement=delivery.agreement,
                agreement_title=None if agreement is None else agreement.title,
                purpose=None if agreement is None else agreement.purpose,
                legal_basis=() if agreement is None else agreement.legal_basis,
                data_categories=() if agreement is None else agreement.data_categories,
                classification=None if agreement is None else agreement.classification,
                partner=delivery.recipient,
                partner_name=None if partner is None else partner.name,
                dataset=delivery.dataset.value,
                version=version.number,
                file_name=_name(dataset.original_name),
                sha256=version.sha256.hex,
                size=version.size,
                kind=version.kind.value,
                reason=version.reason,
                override_note=version.override_note,
                complaint_ref=version.complaint_ref,
                state=delivery.state.value,
                acknowledged_at=delivery.acknowledged_at,
            )
        )
    for received in ledger.received():
        if received.at < since:
            continue
        agreement = cfg.agreements.get(received.agreement)
        partner = cfg.partners.get(received.sender)
        records.append(
            SharedRecord(
                direction="received",
                at=received.at,
                agreement=received.agreement,
                agreement_title=None if agreement is None else agreement.title,
                purpose=None if agreement is None else agreement.purpose,
                legal_basis=() if agreement is None else agreement.legal_basis,
                data_categories=() if agreement is None else agreement.data_categories,
                classification=None if agreement is None else agreement.classification,
                partner=received.sender,
                partner_name=None if partner is None else partner.name,
                dataset=received.dataset.value,
                version=received.dataset_version,
                file_name=None,
                sha256=received.plaintext_sha256,
                size=received.size,
                kind="correction" if received.supersedes is not None else "regular",
                reason=received.reason,
                override_note=None,
                complaint_ref=None,
                state=received.status,
                acknowledged_at=None,
            )
        )
    records.sort(key=lambda r: (r.at, r.direction, r.partner, r.dataset))
    return records
