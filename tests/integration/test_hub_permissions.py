"""TESTPLAN F50 and the permission model of docs/hub.md, on a real sshd with stock sftp."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from tests.support.sshd import Hub, output_lines

pytestmark = pytest.mark.integration

PAYLOAD = b"age-encryption.org/v1\n-> X25519 stand-in\n"


def _deliver(hub: Hub, tmp_path: Path, partner: str, name: str) -> Path:
    """The daemon uploads a delivery to a partner's inbox with stock sftp."""
    local = tmp_path / name
    local.write_bytes(PAYLOAD)
    result = hub.sftp_batch(hub.organisation, f"put {local} /{partner}/inbox/{name}\n")
    assert result.returncode == 0, result.stderr
    return hub.partner_dir(partner) / "inbox" / name


def _local(tmp_path: Path, name: str, mode: int, data: bytes = b"receipt\n") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_partner_pulls_a_delivery_with_the_exact_bytes(hub: Hub, tmp_path: Path) -> None:
    """A delivery the daemon uploads is readable by the partner, byte for byte."""
    _deliver(hub, tmp_path, "southend-uhft", "d1.age")
    target = tmp_path / "pulled.age"

    result = hub.sftp_batch("southend-uhft", f"get inbox/d1.age {target}\n")

    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    "command",
    [
        "rm inbox/d1.age",
        "rename inbox/d1.age outbox/d1.age",
        "rename inbox/d1.age inbox/d2.age",
        "put {local} inbox/d1.age",
        "put {local} inbox/new.age",
        "mkdir inbox/sub",
        "chmod 666 inbox/d1.age",
        "rmdir inbox",
        "rename inbox in",
    ],
)
def test_partner_cannot_change_its_inbox(hub: Hub, tmp_path: Path, command: str) -> None:
    """TESTPLAN 50: writes, deletes, renames and mode changes in the partner's inbox are denied."""
    delivered = _deliver(hub, tmp_path, "southend-uhft", "d1.age")
    local = _local(tmp_path, "mine.age", 0o640)
    inbox = delivered.parent
    before = sorted(os.listdir(inbox))

    result = hub.sftp_batch("southend-uhft", command.format(local=local) + "\n")

    assert result.returncode != 0
    assert sorted(os.listdir(inbox)) == before
    assert delivered.read_bytes() == PAYLOAD
    assert stat.S_IMODE(delivered.stat().st_mode) == 0o640


@pytest.mark.parametrize("folder", ["outbox", "receipts"])
def test_partner_writes_and_daemon_reads_and_removes(hub: Hub, tmp_path: Path, folder: str) -> None:
    """A partner uploads to outbox/ or receipts/; the daemon reads the exact bytes and removes it."""
    local = _local(tmp_path, "r1.sig", 0o640, b"signed receipt\n")
    upload = hub.sftp_batch("essex-police", f"put {local} {folder}/r1.sig\n")
    assert upload.returncode == 0, upload.stderr
    target = tmp_path / "collected"

    result = hub.sftp_batch(
        hub.organisation,
        f"get /essex-police/{folder}/r1.sig {target}\nrm /essex-police/{folder}/r1.sig\n",
    )

    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"signed receipt\n"
    assert not (hub.partner_dir("essex-police") / folder / "r1.sig").exists()


def test_upload_of_a_0600_file_keeps_0600_until_normalised(hub: Hub, tmp_path: Path) -> None:
    """Stock sftp sends the local mode: a 0600 file arrives 0600 and the daemon cannot read it
    until the root-side normaliser (run by 'exchange hub run') makes it 0640."""
    local = _local(tmp_path, "r2.sig", 0o600, b"private mode receipt\n")
    upload = hub.sftp_batch("essex-police", f"put {local} receipts/r2.sig\n")
    assert upload.returncode == 0, upload.stderr
    on_hub = hub.partner_dir("essex-police") / "receipts" / "r2.sig"
    target = tmp_path / "collected"
    fetch = f"get /essex-police/receipts/r2.sig {target}\n"

    before = hub.sftp_batch(hub.organisation, fetch)
    changed = hub.normalise()
    after = hub.sftp_batch(hub.organisation, fetch)

    assert stat.S_IMODE(on_hub.stat().st_mode) == 0o640
    assert (before.returncode, changed, after.returncode) == (1, 1, 0)
    assert "Permission denied" in before.stderr
    assert target.read_bytes() == b"private mode receipt\n"


def test_daemon_removes_a_0600_upload_without_normalising(hub: Hub, tmp_path: Path) -> None:
    """Removal needs only the group-writable folder, so even an unreadable upload can be cleaned."""
    local = _local(tmp_path, "junk", 0o600)
    assert hub.sftp_batch("southend-uhft", f"put {local} outbox/junk\n").returncode == 0

    result = hub.sftp_batch(hub.organisation, "rm /southend-uhft/outbox/junk\n")

    assert result.returncode == 0, result.stderr
    assert not (hub.partner_dir("southend-uhft") / "outbox" / "junk").exists()


def test_uploaded_files_get_the_folder_group(hub: Hub, tmp_path: Path) -> None:
    """The set-group-ID folders give every upload the partner's group, which the daemon is in."""
    local = _local(tmp_path, "r3", 0o644)
    assert hub.sftp_batch("southend-uhft", f"put {local} receipts/r3\n").returncode == 0
    delivered = _deliver(hub, tmp_path, "southend-uhft", "d3.age")

    uploaded = hub.partner_dir("southend-uhft") / "receipts" / "r3"

    partner_gid = pwd.getpwnam("southend-uhft").pw_gid
    assert (uploaded.stat().st_gid, delivered.stat().st_gid) == (partner_gid, partner_gid)
    # -u 0027 strips the bits the client asked for beyond 0640.
    assert stat.S_IMODE(uploaded.stat().st_mode) == 0o640
    assert stat.S_IMODE(delivered.stat().st_mode) == 0o640


def test_partner_cannot_change_modes_of_its_uploads(hub: Hub, tmp_path: Path) -> None:
    """setstat is denied for partners, so an upload cannot be made unreadable to the daemon again."""
    local = _local(tmp_path, "r4", 0o640)
    assert hub.sftp_batch("southend-uhft", f"put {local} receipts/r4\n").returncode == 0

    result = hub.sftp_batch("southend-uhft", "chmod 600 receipts/r4\n")

    assert result.returncode != 0
    assert stat.S_IMODE((hub.partner_dir("southend-uhft") / "receipts" / "r4").stat().st_mode) == (
        0o640
    )


def test_partner_can_list_and_read_but_other_partner_cannot(hub: Hub, tmp_path: Path) -> None:
    """Positive control for the isolation tests: the owner lists its inbox, the neighbour cannot."""
    _deliver(hub, tmp_path, "essex-police", "d5.age")

    own = hub.sftp_batch("essex-police", "ls -1 inbox\n")
    other = hub.sftp_batch("southend-uhft", "ls -1 inbox\n")

    assert output_lines(own) == ["inbox/d5.age"]
    assert output_lines(other) == []
