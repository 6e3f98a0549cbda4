"""exchange.fsutil: atomic writes and StrictModes-style reads of private files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from exchange.errors import KeyFileError, NotFoundError
from exchange.fsutil import atomic_write, fsync_dir, read_private_file

NOBODY_UID = 65534


class Boom(Exception):
    """Raised inside an atomic_write block to simulate a failure half-way."""


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_publishes_content_with_mode(tmp_path: Path) -> None:
    """A successful block leaves exactly the final file, with its content and mode 0600."""
    target = tmp_path / "out.csv"
    with atomic_write(target) as file:
        file.write(b"Essex County Council,1\n")
    assert target.read_bytes() == b"Essex County Council,1\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _names(tmp_path) == ["out.csv"]


def test_atomic_write_mode_ignores_umask(tmp_path: Path) -> None:
    """The mode asked for is the mode given, whatever the process umask."""
    old = os.umask(0o077)
    try:
        with atomic_write(tmp_path / "card.txt", mode=0o644) as file:
            file.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "card.txt").stat().st_mode) == 0o644


def test_atomic_write_exception_leaves_nothing(tmp_path: Path) -> None:
    """An exception in the block leaves neither a final file nor a temporary one."""
    target = tmp_path / "plain.csv"
    with pytest.raises(Boom), atomic_write(target) as file:
        file.write(b"partial plaintext")
        raise Boom
    assert _names(tmp_path) == []


def test_atomic_write_exception_keeps_previous_version(tmp_path: Path) -> None:
    """A failed rewrite leaves the previous content under the final name untouched."""
    target = tmp_path / "plain.csv"
    target.write_bytes(b"version 1")
    with pytest.raises(Boom), atomic_write(target) as file:
        file.write(b"version 2, half")
        raise Boom
    assert target.read_bytes() == b"version 1"
    assert _names(tmp_path) == ["plain.csv"]


def test_atomic_write_temp_name_is_hidden_and_same_directory(tmp_path: Path) -> None:
    """While the block runs the only new entry is a dot-file ending .tmp beside the target."""
    target = tmp_path / ("x" * 250)
    with atomic_write(target) as file:
        (temp,) = _names(tmp_path)
        assert temp.startswith(".") and temp.endswith(".tmp")
        assert len(temp) < 255
        file.write(b"1")
    assert _names(tmp_path) == [target.name]


def test_atomic_write_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    """A symlink at the final name is replaced; the file it pointed to is not written."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "out").symlink_to(victim)
    with atomic_write(tmp_path / "out") as file:
        file.write(b"new")
    assert victim.read_bytes() == b"keep"
    assert not (tmp_path / "out").is_symlink()
    assert (tmp_path / "out").read_bytes() == b"new"


def test_atomic_write_missing_directory_raises_and_leaves_nothing(tmp_path: Path) -> None:
    """Writing into a folder that does not exist fails before anything is created."""
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "nope" / "f") as file:
        file.write(b"x")
    assert _names(tmp_path) == []


def test_fsync_dir_accepts_a_directory_and_refuses_a_file(tmp_path: Path) -> None:
    """fsync_dir syncs a folder and refuses a regular file."""
    fsync_dir(tmp_path)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")


def _private(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "age-identity.txt"
    path.write_bytes(b"AGE-SECRET-KEY-1...\n")
    path.chmod(mode)
    return path


def test_read_private_file_reads_a_0600_file(tmp_path: Path) -> None:
    """A regular 0600 file owned by us is read whole."""
    assert read_private_file(_private(tmp_path)) == b"AGE-SECRET-KEY-1...\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610, 0o602])
def test_read_private_file_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    """Any group or other permission bit is refused with a chmod 600 hint naming the file."""
    path = _private(tmp_path, mode)
    with pytest.raises(KeyFileError) as caught:
        read_private_file(path)
    assert f"{mode:04o}" in caught.value.message
    assert caught.value.hint == f"run 'chmod 600 {path}'"


def test_read_private_file_refuses_a_symlink(tmp_path: Path) -> None:
    """A symlink to a perfectly good key file is refused (O_NOFOLLOW)."""
    link = tmp_path / "link.txt"
    link.symlink_to(_private(tmp_path))
    with pytest.raises(KeyFileError, match="symbolic link") as caught:
        read_private_file(link)
    assert caught.value.hint is not None and "chmod 600" in caught.value.hint


def test_read_private_file_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """A FIFO is refused as not a regular file, without waiting for a writer."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_private_file(fifo)


def test_read_private_file_refuses_a_directory(tmp_path: Path) -> None:
    """A directory is not a key file."""
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_private_file(folder)


def test_read_private_file_refuses_another_owner(tmp_path: Path) -> None:
    """A file owned by another (non-root) user is refused, as OpenSSH StrictModes does."""
    path = _private(tmp_path)
    if os.geteuid() != 0:
        pytest.fail("this test chowns a file and must run as root (as CI does)")
    os.chown(path, NOBODY_UID, NOBODY_UID)
    with pytest.raises(KeyFileError, match="owned by uid 65534"):
        read_private_file(path)


def test_read_private_file_refuses_a_huge_file(tmp_path: Path) -> None:
    """A file larger than any key file is refused rather than read into memory."""
    path = _private(tmp_path)
    with path.open("r+b") as file:
        file.truncate(2 * 1024 * 1024)
    with pytest.raises(KeyFileError, match="too large"):
        read_private_file(path)


def test_read_private_file_missing_is_not_found(tmp_path: Path) -> None:
    """A missing file is a NotFoundError naming the path."""
    with pytest.raises(NotFoundError, match="no such file"):
        read_private_file(tmp_path / "absent.txt")
