"""Filing names at the partner: hostile original names become safe ones, and nothing filed is
ever overwritten."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import InvariantError
from exchange.pull import Inbox, max_ciphertext_size, safe_file_name
from exchange.pull._receive import manifest_hash


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("mash referrals 2026-11.csv", "mash referrals 2026-11.csv"),
        ("../../etc/passwd", "_.._etc_passwd"),
        (".hidden.csv", "hidden.csv"),
        ("-rf.csv", "rf.csv"),
        ("Référrals São Paulo.csv", "Referrals Sao Paulo.csv"),
        ("a\x00b\nc.csv", "a_b_c.csv"),
        ("\u202eviruses.csv", "viruses.csv"),
        ("...", "dataset"),
        ("%%%", "dataset"),
    ],
)
def test_safe_file_name_examples(original: str, expected: str) -> None:
    """Separators, controls, bidi overrides and leading dots or dashes never survive."""
    assert expected == safe_file_name(original)


@given(st.text(min_size=1, max_size=400))
def test_safe_file_name_is_always_a_plain_component(original: str) -> None:
    """Whatever the sender wrote, the name is one short, visible, ASCII path component."""
    name = safe_file_name(original)
    assert name and name.isascii() and name.isprintable()
    assert "/" not in name and name not in (".", "..")
    assert not name.startswith((".", "-", " "))
    assert len(name.encode()) <= 200


def test_long_names_keep_their_extension() -> None:
    """A 300-character name is cut to 200 bytes with its extension kept."""
    name = safe_file_name("x" * 300 + ".csv")
    assert 200 == len(name) and name.endswith(".csv")


def _staged(inbox: Inbox, data: bytes) -> Path:
    """A new staged file (a fresh inode each time: publish links it, so never rewrite one)."""
    inbox.staging.mkdir(parents=True, exist_ok=True)
    path = inbox.staging / f".t{len(list(inbox.staging.iterdir()))}.tmp"
    path.write_bytes(data)
    return path


def test_publish_never_overwrites_and_reuses_identical_content(tmp_path: Path) -> None:
    """A taken name with other bytes gets ' (2)'; the same bytes again (a retry after a crash)
    are the same filing; a planted symlink is never followed."""
    inbox = Inbox(tmp_path / "inbox")
    one, two = b"a,b\n1,2\n", b"a,b\n3,4\n"
    first = inbox.publish(_staged(inbox, one), "essex-cc", "mash", "x.csv", _sha(one))
    second = inbox.publish(_staged(inbox, two), "essex-cc", "mash", "x.csv", _sha(two))
    again = inbox.publish(_staged(inbox, one), "essex-cc", "mash", "x.csv", _sha(one))
    assert ("x.csv", "x (2).csv", first) == (first.name, second.name, again)
    outside = tmp_path / "outside.csv"
    outside.write_bytes(b"secret")
    os.symlink(outside, first.parent / "y.csv")
    third = inbox.publish(_staged(inbox, two), "essex-cc", "mash", "y.csv", _sha(two))
    assert "y (2).csv" == third.name
    assert b"secret" == outside.read_bytes()
    assert one == first.read_bytes() and two == second.read_bytes()


def test_publish_refuses_unchecked_ids(tmp_path: Path) -> None:
    """Sender and agreement must be ids, never paths."""
    inbox = Inbox(tmp_path / "inbox")
    with pytest.raises(InvariantError):
        inbox.publish(_staged(inbox, b"x"), "../etc", "mash", "x.csv", _sha(b"x"))


def test_staged_files_vanish_and_leftovers_are_cleared(tmp_path: Path) -> None:
    """A staged file is removed when its block ends, and a crash's leftovers (idle for ten
    minutes) on a later run."""
    inbox = Inbox(tmp_path / "inbox")
    with inbox.staged("plaintext") as (path, file):
        file.write(b"data")
        assert path.exists()
        assert 0o600 == path.stat().st_mode & 0o777
    assert not path.exists()
    leftover = inbox.staging / ".plaintext.0000.tmp"
    leftover.write_bytes(b"left by a crash")
    written = leftover.stat().st_mtime
    assert 0 == inbox.clear_staging(written + 60)  # maybe another run's download: kept
    assert 1 == inbox.clear_staging(written + 601)
    assert [] == list(inbox.staging.iterdir())


def test_payload_cap_and_manifest_hash() -> None:
    """The payload cap allows the age overhead and no more than a header's worth; the
    manifest hash covers the body without the signature line."""
    assert max_ciphertext_size(0) >= 16
    assert max_ciphertext_size(1 << 20) < (1 << 20) + 70 * 1024
    signed = b"exchange-manifest/v1\na: b\nsignature: xyz==\n"
    assert hashlib.sha256(b"exchange-manifest/v1\na: b\n").hexdigest() == manifest_hash(signed)
    assert manifest_hash(b"no final newline") is None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
