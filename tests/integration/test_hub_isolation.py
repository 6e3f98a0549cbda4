"""TESTPLAN F47-F49: a partner is confined to its own chroot and cannot make links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import HubFactory
from tests.support.sshd import Hub, output_lines

pytestmark = pytest.mark.integration

SECRET = b"OFFICIAL-SENSITIVE: essex-police delivery\n"


@pytest.fixture(name="secret")
def fixture_secret(hub: Hub) -> Path:
    """A delivery in essex-police's inbox, owned like the daemon would leave it."""
    path = hub.partner_dir("essex-police") / "inbox" / "delivery-1.age"
    path.write_bytes(SECRET)
    daemon = hub.organisation
    os.chown(path, *_ids(daemon, "essex-police"))
    path.chmod(0o640)
    return path


def _ids(user: str, group: str) -> tuple[int, int]:
    import grp
    import pwd

    return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid


TRAVERSALS = [
    "../essex-police/inbox/delivery-1.age",
    "/../essex-police/inbox/delivery-1.age",
    "//essex-police/inbox/delivery-1.age",
    "/./../essex-police/inbox/delivery-1.age",
    "inbox/../../essex-police/inbox/delivery-1.age",
    "../" * 600 + "essex-police/inbox/delivery-1.age",
    "/essex-police/inbox/delivery-1.age",
]


@pytest.mark.parametrize("remote", TRAVERSALS, ids=range(len(TRAVERSALS)))
def test_partner_cannot_read_another_partners_file(
    hub: Hub, secret: Path, tmp_path: Path, remote: str
) -> None:
    """southend-uhft cannot fetch essex-police's delivery by any relative or absolute path."""
    target = tmp_path / "stolen"

    result = hub.sftp_batch("southend-uhft", f"get {remote} {target}\n")

    assert result.returncode != 0
    assert not target.exists()


def test_partner_cannot_read_by_real_absolute_path(hub: Hub, secret: Path, tmp_path: Path) -> None:
    """The hub's real on-disk path means nothing inside the chroot."""
    target = tmp_path / "stolen"

    result = hub.sftp_batch("southend-uhft", f"get {secret} {target}\n")

    assert result.returncode != 0
    assert not target.exists()


@pytest.mark.parametrize("directory", ["..", "/..", "//", "/./..", "../" * 600, "inbox/../.."])
def test_partner_cannot_list_above_its_chroot(hub: Hub, secret: Path, directory: str) -> None:
    """Listing above the root shows the partner's own folder, never another partner's."""
    result = hub.sftp_batch("southend-uhft", f"ls -1a {directory}\n")

    listed = " ".join(output_lines(result))
    assert "essex-police" not in listed
    assert "delivery-1.age" not in listed


@pytest.mark.parametrize("path", ["..", "/..", "//..", "/./../..", "../" * 600])
def test_realpath_probing_stays_at_root(hub: Hub, path: str) -> None:
    """Changing to any parent and asking the server's realpath answers the chroot root."""
    result = hub.sftp_batch("southend-uhft", f"cd {path}\npwd\n")

    assert result.returncode == 0, result.stderr
    assert output_lines(result) == ["Remote working directory: /"]


def test_overlong_path_is_refused_and_server_keeps_serving(hub: Hub) -> None:
    """A name beyond NAME_MAX fails that request only; the session and server keep working."""
    # Stock sftp reads batch lines into 2048 bytes, so this is as long as its requests get.
    result = hub.sftp_batch("southend-uhft", "-ls " + "x" * 1000 + "/a" * 400 + "\npwd\n")

    assert result.returncode == 0, result.stderr
    assert "Remote working directory: /" in output_lines(result)


@pytest.mark.parametrize(
    "command",
    [
        "put {local} ../essex-police/outbox/planted",
        "put {local} /../essex-police/receipts/planted",
        "rm ../essex-police/inbox/delivery-1.age",
        "rename ../essex-police/inbox/delivery-1.age outbox/taken",
        "mkdir ../essex-police/planted",
        "mkdir /../planted",
        "put {local} ../planted",
    ],
)
def test_partner_cannot_change_anything_outside_its_folder(
    hub: Hub, secret: Path, tmp_path: Path, command: str
) -> None:
    """Writes, deletes, renames and mkdirs aimed at another partner or the data root fail."""
    local = tmp_path / "local.csv"
    local.write_bytes(b"id,name\n")
    before = sorted(p.relative_to(hub.root) for p in hub.layout.data.rglob("*"))

    result = hub.sftp_batch("southend-uhft", command.format(local=local) + "\n")

    assert result.returncode != 0
    assert sorted(p.relative_to(hub.root) for p in hub.layout.data.rglob("*")) == before
    assert secret.read_bytes() == SECRET


@pytest.mark.parametrize(
    ("command", "created"),
    [
        ("symlink outbox/report.csv outbox/link", "outbox/link"),
        ("symlink / receipts/root", "receipts/root"),
        ("symlink ../essex-police receipts/other", "receipts/other"),
        ("ln -s outbox/report.csv outbox/link", "outbox/link"),
        ("ln outbox/report.csv outbox/hard", "outbox/hard"),
        ("ln inbox/delivery-1.age outbox/hard", "outbox/hard"),
    ],
)
def test_partner_cannot_create_links(hub: Hub, tmp_path: Path, command: str, created: str) -> None:
    """Symbolic and hard link requests are denied by internal-sftp -P symlink,hardlink."""
    folder = hub.partner_dir("southend-uhft")
    local = tmp_path / "report.csv"
    local.write_bytes(b"id\n1\n")
    delivery = folder / "inbox" / "delivery-1.age"
    delivery.write_bytes(b"x")
    uploaded = hub.sftp_batch("southend-uhft", f"put {local} outbox/report.csv\n")
    assert uploaded.returncode == 0, uploaded.stderr

    result = hub.sftp_batch("southend-uhft", command + "\n")

    assert result.returncode != 0
    assert not os.path.lexists(folder / created)


def test_daemon_cannot_create_links_either(hub: Hub) -> None:
    """The daemon login has the same link denial, so it cannot be tricked into making one."""
    result = hub.sftp_batch("essex-cc", "symlink /essex-police /southend-uhft/outbox/x\n")

    assert result.returncode != 0
    assert not os.path.lexists(hub.partner_dir("southend-uhft") / "outbox" / "x")


def test_negative_control_links_work_when_not_denied(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    """With links_denied=False the same requests succeed, so -P is what stops them above."""
    hub = hub_factory(links_denied=False)
    folder = hub.partner_dir("southend-uhft")
    local = tmp_path / "report.csv"
    local.write_bytes(b"id\n")

    result = hub.sftp_batch(
        "southend-uhft",
        f"put {local} outbox/report.csv\nsymlink /inbox outbox/link\n"
        "ln outbox/report.csv outbox/hard\n",
    )

    assert result.returncode == 0, result.stderr
    assert os.readlink(folder / "outbox" / "link") == "/inbox"
    assert (folder / "outbox" / "hard").stat().st_nlink == 2
