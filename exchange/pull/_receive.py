"""Receive deliveries from one hub folder: verify, decrypt, file, record, acknowledge.

Rules (FORMAT.md §5.1 is the order of checks; this module only adds the I/O around it):

1. Everything read from the hub is hostile. Names pass :func:`exchange.core.naming.read_name`
   (anything else is an incident, never a path); links and special files are refused by the
   transport; a manifest file is capped at 64 KiB and its plaintext at 16 KiB; a payload is
   capped at the size its verified manifest allows.
2. Manifests are fetched and decrypted first, then processed in (sender, sequence) order, so
   deliveries listed in random stem order are not mistaken for replays of each other.
3. A manifest whose hash is already in the ledger is a duplicate, recognised before the
   replay check (FORMAT.md §5.1 step 9): nothing is filed twice, and its receipt, rebuilt
   from the ledger row (Ed25519 is deterministic, so the bytes are the same), is uploaded
   again only if it is no longer on the hub.
4. Order of effects for a good delivery: file (link onto the final name) → ledger row →
   receipt upload. A crash between any two is repaired by the next run: the filing is found
   by content, the row by hash, and the receipt is re-sent. The delivery itself is removed
   by its sender once it verified the receipt, never by us.
5. A manifest that did not verify gets no ledger row (we know of no delivery); it raises an
   incident, de-duplicated per file and reason, so a file that stays on the hub is counted,
   not re-reported. It is answered with a signed rejection of the manifest file (FORMAT.md
   §4.6) addressed to the route's writer, the one partner entitled to write that folder,
   never to whoever the manifest claims; it names the hub name and the SHA-256 of the sealed
   file we read whole, and is uploaded once (not again while it is on the hub). A file never
   read whole (over 64 KiB, a link) gets no answer. A verified manifest whose delivery fails
   (payload hashes, decryption, replay, an agreement not shared) gets a signed ``rejected``
   receipt with the reason code, a ledger row and an incident. Nothing that failed is ever
   filed.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

from exchange import agefmt, signing
from exchange.config import Config
from exchange.core.naming import FileKind, Folder, hub_stem, read_name
from exchange.errors import FormatError, PermanentTransportError, TransportError
from exchange.ledger import Ledger, Received
from exchange.log import get_logger
from exchange.manifest import (
    MANIFEST_MAX_SIZE,
    UNVERIFIED_REASONS,
    Manifest,
    ManifestRejected,
    Opened,
    Party,
    Peer,
    Receipt,
    Status,
    UnverifiedRejection,
    check_payload,
    open_manifest,
    sign_receipt,
    sign_unverified_rejection,
    signed_body,
)
from exchange.model import DatasetId, ReasonCode
from exchange.pull._filing import Inbox
from exchange.pull._replacing import file_delivery, receipt_status
from exchange.pull._values import Outcome, PullReport, Result, Route, incident_reason
from exchange.signing import Reason, SignatureRejected, SigningKey
from exchange.transport import (
    CappedSink,
    RemoteEntry,
    RemoteNotFoundError,
    RemoteRefusedEntry,
    RemoteTooLargeError,
    Transport,
)

#: FORMAT.md §6.4: a manifest or receipt file larger than this is not downloaded.
DOCUMENT_FILE_MAX = 64 * 1024
#: How many entries one listing of a delivery folder may return (TESTPLAN 52).
MAX_ENTRIES = 5000
#: How many manifests one run processes per folder; the rest wait for the next run.
MAX_MANIFESTS = 500
#: Allowance for the age header on top of the payload's own overhead.
_HEADER_ALLOWANCE = 64 * 1024
_CHUNK = 64 * 1024
_TAG = 16


def max_ciphertext_size(plaintext_size: int) -> int:
    """The largest age file a plaintext of this size can honestly become."""
    chunks = plaintext_size // _CHUNK + 1
    return plaintext_size + chunks * _TAG + _HEADER_ALLOWANCE


def manifest_hash(signed: bytes) -> str | None:
    """``hex(SHA-256(body))`` of a signed document (FORMAT.md §4.3), or None if it has no
    final line to strip."""
    if not signed.endswith(b"\n"):
        return None
    return hashlib.sha256(signed_body(signed)).hexdigest()


class _Hashing(io.RawIOBase):
    """A writer that hashes and counts what it passes on to ``file``."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.digest.update(b)
        self.file.write(b)
        return len(b)


class _Refused(Exception):  # a control-flow value; never leaves this module
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Unreadable(Exception):  # a control-flow value; never leaves this module
    def __init__(self, remote: str, error: PermanentTransportError) -> None:
        super().__init__(remote)
        self.remote = remote
        self.error = error


@dataclass(frozen=True, slots=True)
class _Fetched:
    stem: str
    signed: bytes
    digest: str
    order: tuple[str, int]
    sealed_sha256: str  # of the manifest file as downloaded (FORMAT.md §4.6)
    claimed: str | None  # the delivery id the manifest claims, if it gives back the stem


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a rejection of an unverified manifest file can name (FORMAT.md §4.6)."""

    sealed_sha256: str
    claimed: str | None
    present: set[str]  # stems already answered on the hub (shared with the run, updated)


class Receiver:
    """One run over one hub login's delivery folders. Not thread-safe."""

    def __init__(
        self,
        *,
        config: Config,
        ledger: Ledger,
        transport: Transport,
        identities: Sequence[agefmt.Identity],
        signing_key: SigningKey,
        now: datetime,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.transport = transport
        self.identities = identities
        self.signing_key = signing_key
        self.now = now
        self.me = Party(config.organisation.id, signing_key.public_key.fingerprint)
        self.inbox = Inbox(config.folders.inbox)
        self.log = get_logger()

    # -- the run ---------------------------------------------------------------------------

    def receive(self, route: Route) -> PullReport:
        """Process every complete delivery in ``route.deliveries``."""
        self.inbox.clear_staging(self.now.timestamp())
        listing = self.transport.list(
            route.deliveries,
            validate=lambda name: read_name(route.deliveries_folder, name) is not None,
            max_entries=MAX_ENTRIES,
        )
        incidents: list[int] = []
        unexpected = tuple(entry.name for entry in listing.refused)
        for name in unexpected:
            self.log.error("pull.unexpected_file", path=f"{route.deliveries}/{name}")
            incidents.append(
                self._incident(
                    ReasonCode.UNEXPECTED_FILE,
                    f"unexpected:{route.deliveries}:{name}",
                    folder=route.deliveries,
                    name=name,
                )
            )
        if listing.truncated:
            self.log.error("pull.folder_flooded", path=route.deliveries, count=MAX_ENTRIES)
            incidents.append(
                self._incident(
                    ReasonCode.UNEXPECTED_FILE,
                    f"flooded:{route.deliveries}",
                    folder=route.deliveries,
                    detail=f"more than {MAX_ENTRIES} entries",
                )
            )
        payloads: dict[str, RemoteEntry] = {}
        manifests: list[str] = []
        for entry in listing.entries:
            hub_file = read_name(route.deliveries_folder, entry.name)
            if hub_file is None or hub_file.temporary:
                continue
            if hub_file.kind is FileKind.PAYLOAD:
                payloads[hub_file.stem] = entry
            elif hub_file.kind is FileKind.MANIFEST:
                manifests.append(hub_file.stem)
        outcomes: list[Outcome] = []
        fetched: list[_Fetched] = []
        present = self._receipts_present(route)
        for stem in manifests[:MAX_MANIFESTS]:
            got = self._fetch_manifest(route, stem, present)
            if isinstance(got, Outcome):
                outcomes.append(got)
            else:
                fetched.append(got)
        fetched.sort(key=lambda f: (f.order, f.stem))
        for item in fetched:
            outcomes.append(self._process(route, item, payloads.get(item.stem), present))
        self._clean_receipts(route, present, set(manifests) | set(payloads))
        incidents += [o.incident for o in outcomes if o.incident is not None]
        return PullReport(tuple(outcomes), unexpected, listing.truncated, tuple(incidents))

    # -- manifests -------------------------------------------------------------------------

    def _fetch_manifest(self, route: Route, stem: str, present: set[str]) -> _Fetched | Outcome:
        remote = f"{route.deliveries}/{stem}{FileKind.MANIFEST.value}"
        raw = CappedSink(DOCUMENT_FILE_MAX)
        try:
            self.transport.get(remote, cast(BinaryIO, raw), max_size=DOCUMENT_FILE_MAX)
        except RemoteNotFoundError:
            return Outcome(stem, Result.DEFERRED)  # removed since the listing
        except RemoteTooLargeError:
            return self._refuse(route, stem, Reason.TOO_LARGE, "manifest file over 64 KiB")
        except RemoteRefusedEntry:
            return self._refuse(route, stem, Reason.MALFORMED, "manifest is a link or special file")
        except PermanentTransportError as error:
            return self._unreadable(remote, error)
        sealed = hashlib.sha256(raw.data).hexdigest()
        answer = _Answer(sealed, None, present)
        plain = CappedSink(MANIFEST_MAX_SIZE)
        try:
            agefmt.decrypt(io.BytesIO(bytes(raw.data)), cast(BinaryIO, plain), self.identities)
        except FormatError as error:
            return self._refuse(route, stem, Reason.DECRYPTION_FAILED, error.message, answer)
        if plain.overflow:
            return self._refuse(route, stem, Reason.TOO_LARGE, "manifest over 16384 bytes", answer)
        signed = bytes(plain.data)
        digest = manifest_hash(signed)
        if digest is None:
            return self._refuse(
                route, stem, Reason.MALFORMED, "manifest does not end in LF", answer
            )
        claimed = None
        try:
            body = signed_body(signed)
            decoded = Manifest.decode(body)
            order = (decoded.sender, decoded.sequence)
            # Only a claim that gives back the file's own hub name is worth repeating.
            if hub_stem(decoded.delivery) == stem:
                claimed = decoded.delivery
        except ManifestRejected:
            order = ("", 0)
        return _Fetched(stem, signed, digest, order, sealed, claimed)

    def _peers(self, route: Route) -> dict[str, Peer]:
        peers: dict[str, Peer] = {}
        for partner in self.config.partners.values():
            if route.senders is not None and partner.id not in route.senders:
                continue
            # Both parties hold the agreement file (protocol §6); the partner is one of its
            # parties when it is listed in ``recipients``.
            agreements = frozenset(
                a.id for a in self.config.agreements.values() if partner.id in a.recipients
            )
            peers[partner.id] = Peer(
                partner.id,
                signing.parse_public_key(partner.keys.signing_key),
                agreements,
                self.ledger.last_received_sequence(partner.id),
            )
        return peers

    def _open_leniently(self, signed: bytes, peers: Mapping[str, Peer]) -> Opened[Manifest]:
        """Open a manifest whose signature verified but whose replay or agreement check
        failed, to answer it with a rejected receipt (only those two checks are relaxed)."""
        body = signed_body(signed)
        manifest = Manifest.decode(body)
        peer = peers[manifest.sender]
        lenient = Peer(peer.id, peer.key, frozenset({manifest.agreement}), None)
        return open_manifest(signed, senders={peer.id: lenient}, me=self.me)

    # -- one delivery ----------------------------------------------------------------------

    def _process(
        self, route: Route, item: _Fetched, payload: RemoteEntry | None, present: set[str]
    ) -> Outcome:
        peers = self._peers(route)
        seen = self.ledger.received_by_hash(item.digest)
        if seen is not None:
            return self._duplicate(route, item, seen, peers, present)
        try:
            opened = open_manifest(item.signed, senders=peers, me=self.me)
        except (ManifestRejected, SignatureRejected) as error:
            if error.reason in (Reason.REPLAY, Reason.AGREEMENT_NOT_SHARED):
                lenient = self._open_leniently(item.signed, peers)
                return self._reject(route, item, lenient, error.reason, error.message)
            answer = _Answer(item.sealed_sha256, item.claimed, present)
            return self._refuse(route, item.stem, error.reason, error.message, answer)
        manifest = opened.value
        if payload is None:
            self.log.warning("pull.payload_missing", delivery=manifest.delivery)
            return Outcome(item.stem, Result.DEFERRED, sender=manifest.sender)
        try:
            path, size = self._file(route, item.stem, opened, payload)
        except _Refused as refused:
            return self._reject(route, item, opened, refused.reason, refused.detail)
        except _Unreadable as unreadable:
            return self._unreadable(unreadable.remote, unreadable.error)
        except RemoteNotFoundError:
            return Outcome(item.stem, Result.DEFERRED, sender=manifest.sender)
        status = receipt_status(self.ledger, manifest)  # protocol §8: replaced or accepted
        row = self._record(opened, status, None, str(path), manifest.plaintext_sha256)
        sent = self._answer(route, item.stem, opened, row)
        self.log.info(
            "pull.filed",
            sender=manifest.sender,
            delivery=manifest.delivery,
            agreement=manifest.agreement,
            dataset=manifest.dataset,
            version=manifest.dataset_version,
            sha256=manifest.plaintext_sha256,
            size=size,
            path=str(path),
        )
        return self._outcome(item.stem, Result.FILED, opened, path=path, receipt_sent=sent)

    def _file(
        self, route: Route, stem: str, opened: Opened[Manifest], payload: RemoteEntry
    ) -> tuple[Path, int]:
        """Download, check, decrypt and file the payload; raise _Refused on any mismatch."""
        manifest = opened.value
        cap = max_ciphertext_size(manifest.plaintext_size)
        if payload.size > cap:
            raise _Refused(Reason.CIPHERTEXT_MISMATCH, "payload larger than its manifest allows")
        remote = f"{route.deliveries}/{stem}{FileKind.PAYLOAD.value}"
        with self.inbox.staged("ciphertext") as (_cpath, cfile):
            hashing = _Hashing(cfile)
            try:
                self.transport.get(remote, cast(BinaryIO, hashing), max_size=cap)
            except RemoteTooLargeError:
                raise _Refused(Reason.CIPHERTEXT_MISMATCH, "payload grew past its cap") from None
            except RemoteRefusedEntry:
                raise _Refused(
                    Reason.CIPHERTEXT_MISMATCH, "payload is a link or special file"
                ) from None
            except RemoteNotFoundError:
                raise
            except PermanentTransportError as error:
                raise _Unreadable(remote, error) from None
            try:
                check_payload(manifest, ciphertext_sha256=hashing.digest.hexdigest())
            except ManifestRejected as error:
                raise _Refused(error.reason, error.message) from None
            cfile.flush()
            cfile.seek(0)
            with self.inbox.staged("plaintext") as (ppath, pfile):
                try:
                    result = agefmt.decrypt(cfile, pfile, self.identities)
                except FormatError as error:
                    raise _Refused(Reason.DECRYPTION_FAILED, error.message) from None
                try:
                    check_payload(
                        manifest,
                        plaintext_sha256=result.plaintext_sha256,
                        plaintext_size=result.plaintext_size,
                    )
                except ManifestRejected as error:
                    raise _Refused(error.reason, error.message) from None
                pfile.flush()
                os.fsync(pfile.fileno())
                # A correction replaces the version we hold in place (_replacing rules).
                path = file_delivery(
                    self.inbox, self.ledger, manifest, ppath, result.plaintext_sha256
                )
                return path, result.plaintext_size

    def _duplicate(
        self,
        route: Route,
        item: _Fetched,
        seen: Received,
        peers: Mapping[str, Peer],
        present: set[str],
    ) -> Outcome:
        try:
            opened = self._open_leniently(item.signed, peers)
        except (ManifestRejected, SignatureRejected, KeyError) as error:
            # Recorded once under this hash, and now it does not verify: keys changed since.
            # It was answered when it verified; a rejection now would contradict that receipt.
            return self._refuse(route, item.stem, Reason.BAD_SIGNATURE, str(error))
        sent = False
        if item.stem not in present:
            sent = self._answer(route, item.stem, opened, seen)
        self.log.info("pull.duplicate", sender=seen.sender, delivery=seen.delivery)
        return self._outcome(item.stem, Result.DUPLICATE, opened, receipt_sent=sent)

    def _reject(
        self, route: Route, item: _Fetched, opened: Opened[Manifest], reason: Reason, detail: str
    ) -> Outcome:
        manifest = opened.value
        row = self._record(opened, Status.REJECTED, reason, None, None)
        incident = self._incident(
            incident_reason(reason),
            f"pull:{route.deliveries}:{item.stem}:{reason.value}",
            partner=manifest.sender,
            agreement=manifest.agreement,
            delivery=manifest.delivery,
            format_reason=reason.value,
        )
        sent = self._answer(route, item.stem, opened, row)
        self.log.error(
            "pull.rejected",
            sender=manifest.sender,
            delivery=manifest.delivery,
            reason_code=reason.value,
            detail=detail,
            incident=incident,
        )
        return self._outcome(
            item.stem, Result.REJECTED, opened, reason=reason, receipt_sent=sent, incident=incident
        )

    def _unreadable(self, remote: str, error: PermanentTransportError) -> Outcome:
        """A file the hub will not let us read yet (docs/hub.md: a partner's upload is 0600
        until the hub's normaliser runs): try again next run, never stop on it."""
        self.log.warning("pull.unreadable", remote_name=remote, error=error.message)
        stem = remote.rsplit("/", 1)[-1].split(".", 1)[0]
        return Outcome(stem, Result.DEFERRED)

    def _refuse(
        self, route: Route, stem: str, reason: Reason, detail: str, answer: _Answer | None = None
    ) -> Outcome:
        incident = self._incident(
            incident_reason(reason),
            f"pull:{route.deliveries}:{stem}:{reason.value}",
            folder=route.deliveries,
            stem=stem,
            format_reason=reason.value,
            manifest_file_sha256=None if answer is None else answer.sealed_sha256,
        )
        self.log.error(
            "pull.refused",
            remote_name=f"{route.deliveries}/{stem}",
            reason_code=reason.value,
            detail=detail,
            incident=incident,
        )
        sent = answer is not None and self._answer_unverified(route, stem, reason, answer)
        # No sender in the outcome: the manifest's claim is unverified, and the rejection's
        # addressee (route.writer) is who wrote the folder, not who the manifest says sent it.
        return Outcome(stem, Result.REFUSED, reason=reason, incident=incident, receipt_sent=sent)

    def _answer_unverified(self, route: Route, stem: str, reason: Reason, answer: _Answer) -> bool:
        """Rule 5: the signed rejection of a manifest file that did not verify, to the one
        partner entitled to have written it; False if there is none to send or the hub failed
        (the next run tries again, since the file is still there)."""
        writer = None if route.writer is None else self.config.partners.get(route.writer)
        if writer is None or reason not in UNVERIFIED_REASONS:
            return False
        if stem in answer.present:
            return True  # answered on an earlier run and still on the hub
        rejection = UnverifiedRejection(
            hub_name=stem,
            manifest_file_sha256=answer.sealed_sha256,
            claimed_delivery=answer.claimed,
            reason=reason,
            time=self.now.astimezone(UTC).replace(microsecond=0),
            sender=writer.id,
            recipient=self.me.id,
            recipient_key=self.me.fingerprint,
        )
        signed = sign_unverified_rejection(rejection, self.signing_key)
        if not self._upload_receipt(route, stem, signed, writer.keys.age_recipient, stem):
            return False
        answer.present.add(stem)
        self.log.info("receipt.sent", sender=writer.id, stem=stem, state="rejected")
        return True

    # -- effects ---------------------------------------------------------------------------

    def _record(
        self,
        opened: Opened[Manifest],
        status: Status,
        reason: Reason | None,
        path: str | None,
        plaintext_sha256: str | None,
    ) -> Received:
        m = opened.value
        row, _new = self.ledger.record_received(
            Received(
                manifest_hash=opened.sha256,
                sender=m.sender,
                delivery=m.delivery,
                agreement=m.agreement,
                dataset=DatasetId(m.dataset),
                dataset_version=m.dataset_version,
                sequence=m.sequence,
                supersedes=None if m.correction is None else m.correction.supersedes,
                status=status.value,
                reason=None if reason is None else reason.value,
                path=path,
                plaintext_sha256=plaintext_sha256,
                size=None if path is None else m.plaintext_size,
                at=self.now,
            )
        )
        return row

    def _answer(self, route: Route, stem: str, opened: Opened[Manifest], row: Received) -> bool:
        """Upload our signed receipt for a recorded delivery; False if the hub failed (the
        next run sends it again, rule 4)."""
        receipt = Receipt.for_delivery(
            opened,
            status=Status(row.status),
            time=row.at,
            plaintext_sha256=row.plaintext_sha256,
            reason=None if row.reason is None else Reason(row.reason),
        )
        signed = sign_receipt(receipt, self.signing_key)
        sender = self.config.partners[opened.value.sender]
        if not self._upload_receipt(route, stem, signed, sender.keys.age_recipient, row.delivery):
            return False
        self.log.info("receipt.sent", sender=row.sender, delivery=row.delivery, state=row.status)
        return True

    def _upload_receipt(
        self, route: Route, stem: str, signed: bytes, age_recipient: str, what: str
    ) -> bool:
        """Encrypt a signed receipt to its addressee and upload it atomically (§6.3, §6.4)."""
        sealed = io.BytesIO()
        agefmt.encrypt(io.BytesIO(signed), sealed, [agefmt.parse_recipient(age_recipient)])
        data = sealed.getvalue()
        try:
            self.transport.put_atomic(
                io.BytesIO(data), route.receipt_path(stem), expected_size=len(data)
            )
        except TransportError as error:
            self.log.warning("pull.receipt_deferred", delivery=what, error=error.message)
            return False
        return True

    def _clean_receipts(self, route: Route, present: set[str], stems: set[str]) -> None:
        """Remove our receipts whose delivery the sender has removed (see Route)."""
        if not route.clean_receipts:
            return
        for stem in sorted(present - stems):
            try:
                self.transport.remove(route.receipt_path(stem))
            except TransportError as error:
                self.log.warning(
                    "pull.receipt_cleanup_deferred", remote_name=stem, error=error.message
                )
                return

    def _receipts_present(self, route: Route) -> set[str]:
        """Stems whose receipt is already in our receipts folder on the hub."""
        try:
            listing = self.transport.list(
                route.receipts,
                validate=lambda name: read_name(Folder.RECEIPTS, name) is not None,
                max_entries=MAX_ENTRIES,
            )
        except TransportError:
            return set()
        stems = set()
        for entry in listing.entries:
            hub_file = read_name(Folder.RECEIPTS, entry.name)
            if hub_file is not None and not hub_file.temporary:
                stems.add(hub_file.stem)
        return stems

    def _incident(self, reason: ReasonCode, key: str, **context: str | int | None) -> int:
        partner = context.pop("partner", None)
        agreement = context.pop("agreement", None)
        incident = self.ledger.open_incident(
            reason=reason,
            now=self.now,
            partner=None if partner is None else str(partner),
            agreement=None if agreement is None else str(agreement),
            context=context,
            dedupe_key=key,
        )
        return incident.id

    @staticmethod
    def _outcome(
        stem: str,
        result: Result,
        opened: Opened[Manifest],
        *,
        reason: Reason | None = None,
        path: Path | None = None,
        receipt_sent: bool = False,
        incident: int | None = None,
    ) -> Outcome:
        m = opened.value
        return Outcome(
            stem,
            result,
            reason=reason,
            sender=m.sender,
            delivery=m.delivery,
            agreement=m.agreement,
            dataset=m.dataset,
            dataset_version=m.dataset_version,
            path=path,
            receipt_sent=receipt_sent,
            incident=incident,
        )
