"""A lost reply to a rename (review finding H1): the lane keeps the delivery ``uploading``,
reconciles by the hash of the manifest found on the hub, and a retry removes the final
manifest before the payload, so the ledger and the hub always agree (docs/DESIGN.md
invariants 11 and 12).

In process, with real workspaces, ledgers, keys and the partner's real ``pull`` and receipt
collection over an in-memory hub whose faults include "rename done, reply lost"; and once
over a real sshd, where the SFTP transport drops the connection right after the manifest's
rename returned (a byte-offset cut with tests/support/tcpproxy.py cannot be aimed at the
encrypted rename request reliably, so the loss is injected above the wire).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pytest

from exchange import keys, pull, receipts
from exchange.clock import SystemClock
from exchange.core import delivery as lifecycle
from exchange.core.delivery import DeliveryState
from exchange.core.naming import DeliveryNames
from exchange.demo.workspaces import ESSEX_CC, SOUTHEND, Workspace, create_workspace
from exchange.errors import InvariantError, TransientTransportError
from exchange.ledger import LEDGER_FILENAME, Delivery, Ledger
from exchange.model import DatasetId, Sha256, VersionKind
from exchange.service import deliver as deliver_mod
from exchange.service.context import Context, Settings
from exchange.service.deliver import deliver_one
from exchange.service.intake import new_delivery_ids
from exchange.service.lane import Lane
from exchange.service.reconcile import reconcile_partner
from exchange.transport import SftpTransport
from exchange.transport.memory import MemoryFaults, MemoryHub, MemoryTransport
from exchange.transport.port import PutResult
from tests.support.deliveries import AGREEMENT, PLAINTEXT, make_orgs
from tests.support.sshd import Hub

pytestmark = pytest.mark.integration

DATASET = DatasetId("ds-" + "1" * 32)


@dataclass
class World:
    sender: Workspace
    partner: Workspace
    ctx: Context
    ledger: Ledger
    hub: MemoryHub
    folder: str  # the partner's hub folder
    delivery: Delivery

    @property
    def names(self) -> DeliveryNames:
        return DeliveryNames.for_delivery(self.delivery.id)

    def inbox(self) -> list[str]:
        prefix = f"{self.folder}/inbox/"
        return sorted(k[len(prefix) :] for k in self.hub.files if k.startswith(prefix))

    def final(self, name: str) -> bytes:
        return self.hub.files[f"{self.folder}/inbox/{name}"]

    def current(self) -> Delivery:
        return self.ledger.get_delivery(self.delivery.id)

    def partner_pull(self) -> list[tuple[str, str | None]]:
        """The partner pulls what is really on the hub (its finals only) and answers; its
        receipts are put back on the sender's hub folder."""
        phub = MemoryHub()
        phub.mkdirs("inbox")
        phub.mkdirs("receipts")
        for key, value in self.hub.files.items():
            if key.startswith(f"{self.folder}/inbox/") and "/inbox/." not in key:
                phub.files["inbox/" + key.rsplit("/", 1)[1]] = value
        with Ledger.open(self.partner.folder / "state" / LEDGER_FILENAME) as pledger:
            report = pull.pull(
                self.partner.config(),
                pledger,
                MemoryTransport(phub),
                identities=keys.load_identities(self.partner.key_paths),
                signing_key=keys.load_signing_key(self.partner.key_paths),
                now=datetime.now(UTC),
            )
        for key, value in phub.files.items():
            if key.startswith("receipts/"):
                self.hub.files[f"{self.folder}/{key}"] = value
        return [
            (
                o.result.value,
                None if o.reason is None else str(getattr(o.reason, "value", o.reason)),
            )
            for o in report.outcomes
        ]

    def collect(self) -> list[tuple[str, str | None]]:
        report = receipts.collect_receipts(
            self.ctx.config,
            self.ledger,
            MemoryTransport(self.hub),
            datetime.now(UTC),
            identities=keys.load_identities(self.sender.key_paths),
        )
        return [(o.result.value, o.reason) for o in report.outcomes]


@pytest.fixture(name="world")
def fixture_world(tmp_path: Path) -> Iterator[World]:
    """Essex County Council sends one dataset to Southend University Hospital over a memory
    hub; the delivery is pending."""
    now = datetime.now(UTC)
    sender = create_workspace(tmp_path / "cc", ESSEX_CC, now=now)
    partner = create_workspace(tmp_path / "p", SOUTHEND, now=now)
    sender.add_partner(partner)
    partner.add_partner(sender)
    sender.add_agreement(AGREEMENT, (SOUTHEND.id,))
    partner.add_agreement(AGREEMENT, (ESSEX_CC.id,))
    cfg = sender.config()
    folder = cfg.partners[SOUTHEND.id].hub_folder
    hub = MemoryHub()
    hub.mkdirs(f"{folder}/inbox")
    hub.mkdirs(f"{folder}/receipts")
    ledger = Ledger.open(sender.folder / "state" / LEDGER_FILENAME)
    spool = sender.folder / "spool"
    spool.mkdir(exist_ok=True)
    sha = Sha256.of_digest(hashlib.sha256(PLAINTEXT).digest())
    (spool / sha.hex).write_bytes(PLAINTEXT)
    ledger.record_intake(
        dataset=DATASET,
        agreement=AGREEMENT,
        original_name=b"referrals.csv",
        sha256=sha,
        size=len(PLAINTEXT),
        spool_path=str(spool / sha.hex),
        recipients=new_delivery_ids((SOUTHEND.id,)),
        now=now,
    )
    ctx = Context(
        config=cfg,
        ledger=ledger,
        clock=SystemClock(),
        settings=Settings(),
        signing_key=keys.load_signing_key(sender.key_paths),
        rng=random.Random(1),
        stopping=threading.Event(),
        abandon=threading.Event(),
    )
    (delivery,) = ledger.deliveries(DeliveryState.PENDING)
    try:
        yield World(sender, partner, ctx, ledger, hub, folder, delivery)
    finally:
        ledger.close()


class _Crash(BaseException):
    """Stands in for kill -9 at a crash point."""


def _crash_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    def crash_point(name: str) -> None:
        if name == point:
            raise _Crash(name)

    monkeypatch.setattr(deliver_mod, "crash_point", crash_point)


def _lane(world: World, faults: MemoryFaults) -> Lane:
    lane = Lane(world.ctx, SOUTHEND.id, lambda: MemoryTransport(world.hub, faults))
    lane._reconciled = True
    return lane


def _next_cycle(lane: Lane) -> None:
    lane._hold_until = 0.0
    lane.cycle()


def test_lost_manifest_rename_reply_stays_uploading_then_reconciles_to_sent(world: World) -> None:
    """(a) The manifest is final on the hub but its rename's reply is lost: the delivery stays
    uploading (not retry_wait), the next cycle finds the manifest by its hash and records sent
    with that manifest's hash, and the partner's genuine receipt acknowledges it."""
    faults = MemoryFaults(lose_rename_reply=".manifest.age")
    lane = _lane(world, faults)
    lane._attempt(world.delivery)
    assert DeliveryState.UPLOADING is world.current().state
    manifest_1 = world.final(world.names.manifest)
    payload_1 = world.final(world.names.payload)

    _next_cycle(lane)
    sent = world.current()
    assert DeliveryState.SENT is sent.state
    assert 1 == sent.attempts and 0 == sent.strikes
    (attempt,) = world.ledger.attempts_of(world.delivery.id)
    assert hashlib.sha256(manifest_1).hexdigest() == attempt.sealed_sha256
    assert attempt.manifest_hash == sent.manifest_hash
    assert [world.names.payload, world.names.manifest] == world.inbox()
    assert payload_1 == world.final(world.names.payload)

    assert [("filed", None)] == world.partner_pull()
    world.collect()
    assert DeliveryState.ACKNOWLEDGED is world.current().state
    assert [] == [i.reason.value for i in world.ledger.incidents()]


def test_lost_payload_rename_reply_is_a_transient_failure_not_a_strike(world: World) -> None:
    """The payload is final but its rename's reply is lost: reconciliation finds no manifest,
    removes the lone payload and records a transient failure (no strike); the retry delivers
    a matching pair the partner accepts."""
    lane = _lane(world, MemoryFaults(lose_rename_reply=f"{world.names.payload}"))
    lane._attempt(world.delivery)
    assert DeliveryState.UPLOADING is world.current().state
    assert [world.names.payload] == world.inbox()

    _next_cycle(lane)  # reconciles (transient failure, the lone payload removed), retries
    after = world.current()
    assert (DeliveryState.SENT, 2, 0) == (after.state, after.attempts, after.strikes)
    events = [e.event for e in world.ledger.events(after.id)]
    assert "UploadFailed" in events and "UploadInterrupted" not in events, events
    assert [("filed", None)] == world.partner_pull()


def test_retry_after_complete_delivery_records_the_earlier_attempt(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(a, b) A delivery whose first attempt is complete on the hub but which the ledger
    holds in retry_wait (as the lane recorded it before this fix): the retry finds manifest 1
    by its hash and records sent with attempt 1's hash and sequence, uploads nothing, and the
    partner's receipt for what it can see is matched, not called forged."""
    _crash_at(monkeypatch, "delivery.after_rename")
    with pytest.raises(_Crash):
        deliver_one(world.ctx, MemoryTransport(world.hub), world.delivery)
    first = world.current()
    now = datetime.now(UTC)
    world.ledger.apply(first.id, lifecycle.UploadFailed(reason="reply lost", retry_at=now), now)
    manifest_1 = world.final(world.names.manifest)
    payload_1 = world.final(world.names.payload)

    # The retry would be killed before its own rename if it uploaded anything.
    _crash_at(monkeypatch, "delivery.before_rename")
    sent = deliver_one(world.ctx, MemoryTransport(world.hub), world.current()).delivery
    assert DeliveryState.SENT is sent.state
    assert (first.manifest_hash, first.sequence) == (sent.manifest_hash, sent.sequence)
    assert (manifest_1, payload_1) == (
        world.final(world.names.manifest),
        world.final(world.names.payload),
    )
    assert [("filed", None)] == world.partner_pull()
    assert [("acknowledged", None)] == world.collect()
    assert DeliveryState.ACKNOWLEDGED is world.current().state


def test_reconcile_compares_manifest_hashes_not_sizes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(a) An attempt killed after recording its ciphertext, while a final manifest of the
    same size that is not any recorded attempt's sits on the hub beside a payload of the
    recorded size: reconciliation does not call it sent, removes both and strikes."""
    _crash_at(monkeypatch, "delivery.before_rename")
    with pytest.raises(_Crash):
        deliver_one(world.ctx, MemoryTransport(world.hub), world.delivery)
    inflight = world.current()
    assert inflight.size is not None
    # Same sizes as this attempt's files, other bytes: what an earlier, unrecorded attempt
    # would have left (age sizes are the same for every attempt).
    (attempt,) = world.ledger.attempts_of(inflight.id)
    world.hub.files[f"{world.folder}/inbox/{world.names.payload}"] = b"p" * inflight.size
    world.hub.files[f"{world.folder}/inbox/{world.names.manifest}"] = b"m" * 400
    assert attempt.sealed_sha256 != hashlib.sha256(b"m" * 400).hexdigest()

    result = reconcile_partner(world.ctx, MemoryTransport(world.hub), SOUTHEND.id)
    assert (0, 1) == (result.completed, result.interrupted)
    after = world.current()
    assert (DeliveryState.RETRY_WAIT, 1) == (after.state, after.strikes)
    assert [] == world.inbox()


class _Recording(MemoryTransport):
    """Records removals and the renames to final names, in order."""

    def __init__(self, hub: MemoryHub, log: list[str]) -> None:
        super().__init__(hub)
        self.log = log

    def remove(self, remote: str) -> bool:
        existed = super().remove(remote)
        if existed and not remote.rsplit("/", 1)[1].startswith("."):
            self.log.append("remove " + remote.rsplit("/", 1)[1])
        return existed

    def _finish_upload(self, part: str, final: str, written: int) -> None:
        super()._finish_upload(part, final, written)
        self.log.append("rename " + final.rsplit("/", 1)[1])


def test_retry_removes_the_final_manifest_before_the_payload(world: World) -> None:
    """(b) A retry facing a final manifest that matches no recorded attempt removes it first,
    then the payload, before renaming new files in, so the partner never sees a manifest
    beside a payload it does not describe; the pair it then pulls is accepted."""
    lane = _lane(world, MemoryFaults(refuse_connects=0, cut_after_bytes=10))
    lane._attempt(world.delivery)
    assert DeliveryState.RETRY_WAIT is world.current().state
    world.hub.files[f"{world.folder}/inbox/{world.names.payload}"] = b"stale payload"
    world.hub.files[f"{world.folder}/inbox/{world.names.manifest}"] = b"stale manifest"

    log: list[str] = []
    deliver_one(world.ctx, _Recording(world.hub, log), world.current())
    assert [
        f"remove {world.names.manifest}",
        f"remove {world.names.payload}",
        f"rename {world.names.payload}",
        f"rename {world.names.manifest}",
    ] == log
    assert [("filed", None)] == world.partner_pull()


def test_partner_pulling_during_the_lost_reply_window_gets_one_consistent_pair(
    world: World,
) -> None:
    """(b) The partner pulls right after the lost manifest reply and again after the lane has
    run on: it accepts the delivery once and never sees a mismatched pair; the sender records
    no forged receipt."""
    lane = _lane(world, MemoryFaults(lose_rename_reply=".manifest.age"))
    lane._attempt(world.delivery)
    assert [("filed", None)] == world.partner_pull()
    for _ in range(3):
        _next_cycle(lane)
    world.collect()
    assert DeliveryState.ACKNOWLEDGED is world.current().state
    assert [] == [o for o in world.partner_pull() if o[0] != "filed"]
    assert [] == [i.reason.value for i in world.ledger.incidents()]


def test_lost_reply_then_withdrawal_or_correction_keeps_the_partner_a_holder(
    world: World,
) -> None:
    """(c) After a lost manifest reply the delivery can be neither cancelled nor superseded
    before the hub is asked: it is reconciled to sent, so the partner that holds the data is
    among the dataset's holders and a correction goes to it."""
    lane = _lane(world, MemoryFaults(lose_rename_reply=".manifest.age"))
    lane._attempt(world.delivery)
    now = datetime.now(UTC)
    with pytest.raises(InvariantError):
        world.ledger.apply(world.delivery.id, lifecycle.Cancelled(reason="partner withdrew"), now)
    version = world.ledger.get_version(world.delivery.version)
    correction = world.ledger.add_version(
        dataset=DATASET,
        sha256=Sha256.of_digest(hashlib.sha256(PLAINTEXT + b"x").digest()),
        size=len(PLAINTEXT) + 1,
        spool_path=version.spool_path + "-v2",
        kind=VersionKind.CORRECTION,
        supersedes=version.id,
        complaint_ref="C-1",
        reason="wrong risk level",
        recipients=new_delivery_ids((SOUTHEND.id,)),
        now=now + timedelta(seconds=1),
    )
    assert DeliveryState.UPLOADING is world.current().state  # not superseded
    assert correction.number == 2
    _next_cycle(lane)
    assert DeliveryState.SENT is world.current().state
    assert {SOUTHEND.id} == world.ledger.holders(DATASET)


class _LostManifestReply(SftpTransport):
    """The real SFTP transport whose manifest rename happens on the real sshd, after which the
    connection is dropped before the daemon hears back (as a reset would)."""

    fired = False

    def put_atomic(
        self, src: BinaryIO, remote_final: str, *, expected_size: int | None = None
    ) -> PutResult:
        result = super().put_atomic(src, remote_final, expected_size=expected_size)
        if remote_final.endswith(".manifest.age") and not _LostManifestReply.fired:
            _LostManifestReply.fired = True
            self.close()
            raise TransientTransportError("connection reset (reply to posix-rename lost)")
        return result


def test_lost_manifest_reply_over_a_real_sshd_is_reconciled_and_acknowledged(
    tmp_path: Path, hub: Hub
) -> None:
    """Over a real OpenSSH hub: the manifest's rename is done but the daemon sees a reset;
    the lane reconciles over SFTP by the manifest's hash (sent, one attempt), the partner
    pulls and files it, and its receipt acknowledges the delivery."""
    orgs = make_orgs(tmp_path, hub)
    with orgs.ledger(orgs.cc) as ledger:
        spool = orgs.cc.folder / "spool"
        spool.mkdir(exist_ok=True)
        sha = Sha256.of_digest(hashlib.sha256(PLAINTEXT).digest())
        (spool / sha.hex).write_bytes(PLAINTEXT)
        ledger.record_intake(
            dataset=DATASET,
            agreement=AGREEMENT,
            original_name=b"referrals.csv",
            sha256=sha,
            size=len(PLAINTEXT),
            spool_path=str(spool / sha.hex),
            recipients=new_delivery_ids((SOUTHEND.id,)),
            now=datetime.now(UTC),
        )
        ctx = Context(
            config=orgs.cc.config(),
            ledger=ledger,
            clock=SystemClock(),
            settings=Settings(),
            signing_key=keys.load_signing_key(orgs.cc.key_paths),
            rng=random.Random(1),
            stopping=threading.Event(),
            abandon=threading.Event(),
        )
        settings = orgs.transport(ESSEX_CC.id).settings
        lane = Lane(ctx, SOUTHEND.id, lambda: _LostManifestReply(settings))
        _LostManifestReply.fired = False
        try:
            lane.cycle()
            assert _LostManifestReply.fired
            (delivery,) = ledger.deliveries()
            assert DeliveryState.UPLOADING is delivery.state
            _next_cycle(lane)
        finally:
            lane._close()
        sent = ledger.get_delivery(delivery.id)
        assert (DeliveryState.SENT, 1, 0) == (sent.state, sent.attempts, sent.strikes)

        partner = orgs.partners[SOUTHEND.id]
        with orgs.ledger(partner) as pledger:
            report = pull.pull(
                partner.config(),
                pledger,
                orgs.transport(SOUTHEND.id),
                identities=keys.load_identities(partner.key_paths),
                signing_key=keys.load_signing_key(partner.key_paths),
                now=datetime.now(UTC),
            )
        assert ["filed"] == [o.result.value for o in report.outcomes]
        receipts.collect_receipts(
            ctx.config,
            ledger,
            orgs.transport(ESSEX_CC.id),
            datetime.now(UTC),
            identities=keys.load_identities(orgs.cc.key_paths),
        )
        assert DeliveryState.ACKNOWLEDGED is ledger.get_delivery(delivery.id).state
        assert [] == ledger.incidents()


def _no_longer_recipient(world: World) -> None:
    cfg = world.ctx.config
    agreement = dataclasses.replace(cfg.agreements[AGREEMENT], recipients=())
    config = dataclasses.replace(cfg, agreements={**cfg.agreements, AGREEMENT: agreement})
    world.ctx = dataclasses.replace(world.ctx, config=config)


def test_cancelling_a_retry_asks_the_hub_first(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(c) A retry_wait delivery whose earlier attempt is complete on the hub (a ledger from
    before this fix) is not cancelled when the partner stops being a recipient: the lane
    finds the manifest by its hash, records sent, and the partner stays a holder."""
    _crash_at(monkeypatch, "delivery.after_rename")
    with pytest.raises(_Crash):
        deliver_one(world.ctx, MemoryTransport(world.hub), world.delivery)
    now = datetime.now(UTC)
    world.ledger.apply(
        world.delivery.id, lifecycle.UploadFailed(reason="reply lost", retry_at=now), now
    )
    _no_longer_recipient(world)
    assert [] == _lane(world, MemoryFaults())._due()
    assert DeliveryState.SENT is world.current().state
    assert {SOUTHEND.id} == world.ledger.holders(DATASET)


def test_cancelling_a_retry_with_nothing_on_the_hub_cancels(world: World) -> None:
    """A retry_wait delivery with no manifest on the hub is cancelled as before when the
    partner stops being a recipient, and the partner is no holder."""
    _lane(world, MemoryFaults(cut_after_bytes=10))._attempt(world.delivery)
    assert DeliveryState.RETRY_WAIT is world.current().state
    _no_longer_recipient(world)
    assert [] == _lane(world, MemoryFaults())._due()
    assert DeliveryState.CANCELLED is world.current().state
    assert set() == world.ledger.holders(DATASET)
