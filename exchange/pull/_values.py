"""Values of the receiving side: where deliveries come from, and what became of each one."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from exchange.config import Config, Partner
from exchange.core.naming import Folder
from exchange.model import ReasonCode
from exchange.signing import Reason


@dataclass(frozen=True, slots=True)
class Route:
    """Where one hub login finds deliveries addressed to us, and where our receipts go.

    A partner pulling from its hub folder reads ``inbox/`` and answers in ``receipts/``
    (FORMAT.md §6.2). The hub's own organisation, collecting what a partner sent it, reads
    ``<folder>/outbox/`` and answers in ``<folder>/inbox/`` (the folder the partner reads).
    """

    deliveries: str
    deliveries_folder: Folder
    receipts: str
    #: Senders whose manifests may appear here; None means every configured partner. In a
    #: partner's ``outbox/`` on our hub only that partner can have written.
    senders: frozenset[str] | None
    #: Whether we remove our receipts once the sender removed the delivery they answer. The
    #: sender removes its own delivery after verifying our receipt (FORMAT.md §6.2, and
    #: docs/hub.md): in a partner's ``outbox/`` on our hub that is the partner, and our
    #: receipts in its ``inbox/``, which it cannot delete, are then ours to remove. At a
    #: partner, the hub's owner removes both.
    clean_receipts: bool
    #: The one partner entitled to write in ``deliveries`` (FORMAT.md §6.2): the partner whose
    #: ``outbox/`` it is, or the hub's operator for our own ``inbox/``. A manifest there that
    #: does not verify is answered to this partner (FORMAT.md §4.6), never to whoever the
    #: manifest claims; None when the configuration does not say who it is (no answer).
    writer: str | None = None

    def receipt_path(self, stem: str) -> str:
        return f"{self.receipts}/{stem}.receipt.age"


def pull_route(config: Config | None = None) -> Route:
    """A partner's view of its own hub folder (``exchange pull``)."""
    return Route(
        "inbox",
        Folder.INBOX,
        "receipts",
        None,
        clean_receipts=False,
        writer=None if config is None else hub_operator(config),
    )


def hub_operator(config: Config) -> str | None:
    """The partner whose hub we pull from, the only one who can write our ``inbox/``
    (docs/hub.md "Roles"): the one partner configured with ``[hub] role = "partner"`` (the
    configuration check allows no other), or the only partner configured at all. With more
    partners and our own hub the configuration does not say, and None is returned."""
    partners = sorted(config.partners)
    if len(partners) == 1:
        return partners[0]
    return None


def inbound_route(partner: Partner) -> Route:
    """Our daemon's view of what ``partner`` uploaded to its ``outbox/`` on our hub."""
    folder = partner.hub_folder
    return Route(
        f"{folder}/outbox",
        Folder.OUTBOX,
        f"{folder}/inbox",
        frozenset({partner.id}),
        clean_receipts=True,
        writer=partner.id,
    )


class Result(enum.Enum):
    """What happened to one delivery found on the hub."""

    FILED = "filed"  # verified, decrypted, filed; accepted receipt sent
    REJECTED = "rejected"  # the manifest verified but the delivery failed; rejected receipt
    REFUSED = "refused"  # the manifest did not verify: nothing filed; rejection sent to the
    # folder's writer (FORMAT.md §4.6) when it is known and the manifest file was read whole
    DUPLICATE = "duplicate"  # processed before (same manifest hash); its receipt is ensured
    DEFERRED = "deferred"  # try again later (a payload not there yet, a transient failure)


@dataclass(frozen=True, slots=True)
class Outcome:
    stem: str
    result: Result
    reason: Reason | None = None
    sender: str | None = None
    delivery: str | None = None
    agreement: str | None = None
    dataset: str | None = None
    dataset_version: int | None = None
    path: Path | None = None
    receipt_sent: bool = False
    incident: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "stem": self.stem,
            "result": self.result.value,
            "reason": None if self.reason is None else self.reason.value,
            "sender": self.sender,
            "delivery": self.delivery,
            "agreement": self.agreement,
            "dataset": self.dataset,
            "dataset_version": self.dataset_version,
            "path": None if self.path is None else str(self.path),
            "receipt_sent": self.receipt_sent,
            "incident": self.incident,
        }


@dataclass(frozen=True, slots=True)
class PullReport:
    outcomes: tuple[Outcome, ...] = ()
    #: Names on the hub that are not ours (bad names, links, special files), escaped.
    unexpected: tuple[str, ...] = ()
    truncated: bool = False
    incidents: tuple[int, ...] = field(default=())

    def count(self, result: Result) -> int:
        return sum(1 for o in self.outcomes if o.result is result)

    def merged(self, other: PullReport) -> PullReport:
        return PullReport(
            self.outcomes + other.outcomes,
            self.unexpected + other.unexpected,
            self.truncated or other.truncated,
            self.incidents + other.incidents,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "outcomes": [o.to_json() for o in self.outcomes],
            "unexpected": list(self.unexpected),
            "truncated": self.truncated,
            "incidents": list(self.incidents),
            "counts": {r.value: self.count(r) for r in Result},
        }


#: The incident reason recorded for each FORMAT.md §7 code (the ledger's vocabulary is
#: coarser; the exact code goes into the incident's context as ``format_reason``).
INCIDENT_REASONS: dict[Reason, ReasonCode] = {
    Reason.BAD_SIGNATURE: ReasonCode.SIGNATURE_INVALID,
    Reason.MALFORMED_SIGNATURE: ReasonCode.SIGNATURE_INVALID,
    Reason.KEY_MISMATCH: ReasonCode.SIGNATURE_INVALID,
    Reason.UNKNOWN_SIGNER: ReasonCode.SIGNATURE_INVALID,
    Reason.REPLAY: ReasonCode.REPLAY,
    Reason.DECRYPTION_FAILED: ReasonCode.DECRYPT_FAILED,
    Reason.CIPHERTEXT_MISMATCH: ReasonCode.DECRYPT_FAILED,
    Reason.PLAINTEXT_MISMATCH: ReasonCode.DECRYPT_FAILED,
}


def incident_reason(reason: Reason) -> ReasonCode:
    """The ledger incident reason for a FORMAT.md §7 code (anything else: unexpected file)."""
    return INCIDENT_REASONS.get(reason, ReasonCode.UNEXPECTED_FILE)
