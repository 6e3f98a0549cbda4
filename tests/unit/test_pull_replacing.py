"""The receiving side of a correction: replace in place, move the old version aside, be
idempotent after a crash, and file as new when the old version was never held."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from exchange.ledger import LEDGER_FILENAME, Ledger, Received
from exchange.manifest import Correction, Manifest, Status
from exchange.model import DatasetId
from exchange.pull._filing import Inbox
from exchange.pull._replacing import SUPERSEDED, file_delivery, held_version, receipt_status

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
DATASET = "ds-" + "2" * 32
OLD = b"referral_id,age_band\nR-1,5-10\n"
NEW = b"referral_id,age_band\nR-1,0-4\n"
NAME = "referrals.csv"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(seed: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(seed).digest()).decode().rstrip("=")


def manifest(version: int = 2, supersedes: int | None = 1) -> Manifest:
    return Manifest.build(
        created=T0,
        delivery="dl-" + "7" * 32,
        dataset=DATASET,
        dataset_version=version,
        correction=None
        if supersedes is None
        else Correction(supersedes=supersedes, complaint="CMP-1", reason="wrong age band"),
        sender="essex-cc",
        sender_key=fingerprint(b"essex-cc"),
        recipient="southend-uhft",
        recipient_key=fingerprint(b"southend-uhft"),
        agreement="mash-referrals",
        purpose="Protect children at risk",
        legal_basis="Children Act 2004, s.11",
        classification="OFFICIAL-SENSITIVE",
        file_name=NAME,
        media_type="text/csv",
        plaintext_size=len(NEW),
        plaintext_sha256=sha(NEW),
        ciphertext_sha256="c" * 64,
        retain_until=date(2027, 2, 23),
        sequence=version + 10,
    )


@pytest.fixture(name="ledger")
def fixture_ledger(tmp_path: Path) -> Iterator[Ledger]:
    (tmp_path / "state").mkdir()
    with Ledger.open(tmp_path / "state" / LEDGER_FILENAME) as ledger:
        yield ledger


@pytest.fixture(name="inbox")
def fixture_inbox(tmp_path: Path) -> Inbox:
    return Inbox(tmp_path / "inbox")


def hold_v1(ledger: Ledger, inbox: Inbox) -> Path:
    """File version 1 the way pull does, and record it."""
    with inbox.staged("plaintext") as (staged, file):
        file.write(OLD)
        file.flush()
        path = inbox.publish(staged, "essex-cc", "mash-referrals", NAME, sha(OLD))
    ledger.record_received(
        Received(
            manifest_hash="a" * 64,
            sender="essex-cc",
            delivery="dl-" + "1" * 32,
            agreement="mash-referrals",
            dataset=DatasetId(DATASET),
            dataset_version=1,
            sequence=1,
            supersedes=None,
            status="accepted",
            reason=None,
            path=str(path),
            plaintext_sha256=sha(OLD),
            size=len(OLD),
            at=T0,
        )
    )
    return path


def file_new(ledger: Ledger, inbox: Inbox, m: Manifest) -> Path:
    with inbox.staged("plaintext") as (staged, file):
        file.write(NEW)
        file.flush()
        return file_delivery(inbox, ledger, m, staged, sha(NEW))


def test_correction_replaces_the_filed_version_and_moves_it_aside(
    ledger: Ledger, inbox: Inbox
) -> None:
    """The filed path now holds v2 only; v1 is read-only under .superseded/<dataset>-v1/."""
    filed = hold_v1(ledger, inbox)
    assert filed == file_new(ledger, inbox, manifest())
    assert NEW == filed.read_bytes()
    aside = filed.parent / SUPERSEDED / f"{DATASET}-v1" / NAME
    assert OLD == aside.read_bytes()
    assert 0o400 == aside.stat().st_mode & 0o777
    assert [SUPERSEDED, NAME] == sorted(os.listdir(filed.parent))
    assert Status.REPLACED == receipt_status(ledger, manifest())
    assert [] == os.listdir(inbox.staging)


def test_replacing_again_after_a_crash_moves_nothing(ledger: Ledger, inbox: Inbox) -> None:
    """A re-run after the rename (before the ledger row) finds v2 in place and keeps it."""
    filed = hold_v1(ledger, inbox)
    file_new(ledger, inbox, manifest())
    assert filed == file_new(ledger, inbox, manifest())
    assert NEW == filed.read_bytes()
    assert [NAME] == os.listdir(filed.parent / SUPERSEDED / f"{DATASET}-v1")


def test_a_crash_between_the_link_and_the_rename_is_finished_on_retry(
    ledger: Ledger, inbox: Inbox
) -> None:
    """v1 already linked aside (same inode) but not yet replaced: the retry replaces it."""
    filed = hold_v1(ledger, inbox)
    folder = filed.parent / SUPERSEDED / f"{DATASET}-v1"
    folder.mkdir(parents=True)
    os.link(filed, folder / NAME)
    file_new(ledger, inbox, manifest())
    assert (NEW, OLD) == (filed.read_bytes(), (folder / NAME).read_bytes())


def test_correction_of_data_never_held_is_filed_as_new_and_accepted(
    ledger: Ledger, inbox: Inbox
) -> None:
    """Without v1 in our ledger the correction is filed like any dataset, status accepted."""
    m = manifest()
    assert held_version(ledger, m) is None
    path = file_new(ledger, inbox, m)
    assert NEW == path.read_bytes()
    assert Status.ACCEPTED == receipt_status(ledger, m)
    assert not (path.parent / SUPERSEDED).exists()


def test_a_regular_version_never_replaces(ledger: Ledger, inbox: Inbox) -> None:
    """A new regular version of the same dataset is filed beside v1, not over it."""
    filed = hold_v1(ledger, inbox)
    path = file_new(ledger, inbox, manifest(supersedes=None))
    assert path != filed and OLD == filed.read_bytes()
    assert Status.ACCEPTED == receipt_status(ledger, manifest(supersedes=None))


def test_a_filed_path_turned_into_a_link_is_not_followed(
    ledger: Ledger, inbox: Inbox, tmp_path: Path
) -> None:
    """If the filed name is now a symlink, nothing is written through it: filed as new."""
    filed = hold_v1(ledger, inbox)
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_bytes(b"not ours\n")
    filed.unlink()
    filed.symlink_to(elsewhere)
    path = file_new(ledger, inbox, manifest())
    assert path != filed and NEW == path.read_bytes()
    assert b"not ours\n" == elsewhere.read_bytes()


def test_a_held_version_moved_away_by_the_analyst_is_refiled_in_place(
    ledger: Ledger, inbox: Inbox
) -> None:
    """The analyst removed v1 from the filed location: v2 is filed there, nothing moved aside."""
    filed = hold_v1(ledger, inbox)
    filed.unlink()
    assert filed == file_new(ledger, inbox, manifest())
    assert NEW == filed.read_bytes()
    assert not (filed.parent / SUPERSEDED).exists()
