"""Local filesystem durability: the one crash-safe recipe for writing and reading our files.

Rules:

1. Nothing writes a final name directly. :func:`atomic_write` writes a temporary file in the
   same directory (``O_CREAT|O_EXCL|O_NOFOLLOW``, a dot name ending ``.tmp``), fsyncs it,
   ``renames it (``os.replace``) onto the final name and fsyncs the directory. On any exception the
   temporary file is removed and the final name is untouched.
2. Private files (keys, identities) are read with :func:`read_private_file`, which refuses
   what OpenSSH's StrictModes refuses: a symlink, anything but a regular file, a file that
   group or others may read or write, or one owned by another user.
3. Every error is an ``ExchangeError`` that names the path and says how to fix it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from exchange.errors import KeyFileError, NotFoundError

#: Private files are small; a larger one is not a key file.
MAX_PRIVATE_FILE = 1024 * 1024
_TEMP_NAME_KEEP = 64


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path(path: Path) -> Path:
    # Bounded so a long final name cannot push the temporary name past NAME_MAX.
    stem = path.name[:_TEMP_NAME_KEEP]
    return path.with_name(f".{stem}.{secrets.token_hex(8)}.tmp")


@contextlib.contextmanager
def atomic_write(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a binary file whose content appears under ``path`` only if the block succeeds."""
    temp = _temp_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, mode)
    try:
        # The umask may have cleared bits we were asked for; set exactly ``mode``.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            fd = -1  # the file object owns it now
            yield file
            file.flush()
            os.fsync(file.fileno())
        temp.replace(path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    fsync_dir(path.parent)


def read_private_file(path: Path) -> bytes:
    """Read a private key or identity file, refusing unsafe ones (see the module rules)."""
    fix = f"chmod 600 {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(
            f"{path}: no such file", hint="check the path of the key or identity file"
        ) from None
    except OSError as error:
        if path.is_symlink():
            raise KeyFileError(
                f"{path}: is a symbolic link; refusing to read a private key through it",
                hint=f"replace the link with the file itself, then run '{fix}'",
            ) from None
        raise KeyFileError(
            f"{path}: cannot be read: {error.strerror}",
            hint="check that the file exists and that this user may read it",
        ) from None
    try:
        _check_private(path, os.fstat(fd), fix)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as file:
            fd = -1  # the file object owns it now
            return file.read(MAX_PRIVATE_FILE + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def _check_private(path: Path, info: os.stat_result, fix: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{path}: is not a regular file", hint="point at the key file itself")
    if info.st_uid not in (os.geteuid(), 0):
        raise KeyFileError(
            f"{path}: is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})",
            hint=f"chown the file to this user, then run '{fix}'",
        )
    if info.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} are too open; "
            "a private key must not be accessible by group or others",
            hint=f"run '{fix}'",
        )
    if info.st_size > MAX_PRIVATE_FILE:
        raise KeyFileError(
            f"{path}: is {info.st_size} bytes, too large for a key file",
            hint="point at the key file itself",
        )
