"""The receiving side: ``exchange pull`` at a partner, and inbound datasets at the hub's owner.

Rules:

1. One code path receives every delivery, wherever it lies: a partner's own ``inbox/``
   (:func:`pull_route`) or a partner's ``outbox/`` on our hub (:func:`inbound_route`). It
   verifies in the order of FORMAT.md §5.1, files only what passed every check, records
   everything in our ledger and answers with a signed receipt (``_receive`` rules).
2. Plaintext exists only inside our inbox folder (``_filing`` rules).
3. An agreement is shared with a sender when our ``config/agreements/<id>.toml`` lists that
   sender among its ``recipients`` (the parties of the agreement besides us; both parties
   hold the agreed document, protocol §6).
4. A correction (``supersedes``) replaces, atomically and in place, the version of the
   dataset we hold, which is moved aside into ``.superseded/``, and is acknowledged
   ``replaced``; one for data we never held is filed as new and acknowledged ``accepted``
   (``_replacing`` rules).
5. No printing: functions return a :class:`PullReport`; ``exchange pull`` renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from exchange import agefmt
from exchange.config import Config
from exchange.ledger import Ledger
from exchange.log import get_logger
from exchange.pull._filing import Inbox, safe_file_name
from exchange.pull._receive import (
    DOCUMENT_FILE_MAX,
    MAX_ENTRIES,
    Receiver,
    manifest_hash,
    max_ciphertext_size,
)
from exchange.pull._values import (
    Outcome,
    PullReport,
    Result,
    Route,
    inbound_route,
    incident_reason,
    pull_route,
)
from exchange.signing import SigningKey
from exchange.transport import RemoteNotFoundError, Transport

__all__ = [
    "DOCUMENT_FILE_MAX",
    "MAX_ENTRIES",
    "Inbox",
    "Outcome",
    "PullReport",
    "Receiver",
    "Result",
    "Route",
    "collect_inbound",
    "inbound_route",
    "incident_reason",
    "manifest_hash",
    "max_ciphertext_size",
    "pull",
    "pull_route",
    "safe_file_name",
]


def pull(
    config: Config,
    ledger: Ledger,
    transport: Transport,
    *,
    identities: Sequence[agefmt.Identity],
    signing_key: SigningKey,
    now: datetime,
) -> PullReport:
    """A partner's one-shot pull of its ``inbox/`` (``transport`` is logged in as us)."""
    receiver = Receiver(
        config=config,
        ledger=ledger,
        transport=transport,
        identities=identities,
        signing_key=signing_key,
        now=now,
    )
    return receiver.receive(pull_route(config))


def collect_inbound(
    config: Config,
    ledger: Ledger,
    transport: Transport,
    *,
    identities: Sequence[agefmt.Identity],
    signing_key: SigningKey,
    now: datetime,
) -> PullReport:
    """Our daemon's pass over every partner's ``outbox/`` on our hub (issue 6 item 3)."""
    receiver = Receiver(
        config=config,
        ledger=ledger,
        transport=transport,
        identities=identities,
        signing_key=signing_key,
        now=now,
    )
    report = PullReport()
    for partner in config.partners.values():
        try:
            report = report.merged(receiver.receive(inbound_route(partner)))
        except RemoteNotFoundError:
            get_logger().warning("inbound.folder_missing", partner=partner.id)
    return report
