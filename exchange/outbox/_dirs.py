"""Directory-descriptor helpers and the quarantine folder. See the package docstring."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

import structlog

from exchange.clock import Clock
from exchange.core.intake import Refused
from exchange.errors import InvariantError
from exchange.model import ReasonCode, Sha256
from exchange.outbox._values import (
    CrashPoint,
    Identity,
    OutboxError,
    Quarantined,
    Retry,
    Skipped,
    SkipReason,
    defer,
)

TEMP_PREFIX: Final = ".tmp-"
REASON_SUFFIX: Final = ".reason.json"
DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SAFE_BYTES: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-"
)
_MAX_SAFE_NAME: Final = 160  # keeps "<time>-<name>-<n>.reason.json" well under NAME_MAX (255)

_log = structlog.get_logger()


def identity(info: os.stat_result) -> Identity:
    """What must not change while a file is being taken."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def lstat_at(dir_fd: int, name: bytes | str) -> os.stat_result | None:
    """``fstatat(..., AT_SYMLINK_NOFOLLOW)``; None if the entry does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def safe_name(raw: bytes) -> str:
    """An allow-listed spelling of an outside name: other bytes become ``%XX``."""
    return "".join(chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in raw)[:_MAX_SAFE_NAME]


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def unlink_quietly(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def write_file_at(dir_fd: int, final: str, data: bytes, mode: int) -> None:
    """``fsutil.atomic_write`` relative to a held directory descriptor: temp, fsync, rename,
    directory fsync; the temporary file is removed on any failure."""
    temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(temp, NEW_FLAGS, mode, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, mode)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink_quietly(dir_fd, temp)
        raise
    os.fsync(dir_fd)


def open_dir(path: Path, what: str) -> int:
    """Open a configured folder; the last component must not be a link."""
    try:
        return os.open(path, DIR_FLAGS)
    except FileNotFoundError:
        raise OutboxError(f"{path}: the {what} folder does not exist") from None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OutboxError(
                f"{path}: the {what} folder is a symbolic link or not a directory",
                hint="point the configuration at the real directory; links are not followed",
            ) from None
        raise OutboxError(f"{path}: the {what} folder cannot be opened: {error.strerror}") from None


def open_subdir(root: Path, name: str, what: str) -> int:
    """``root/name``, created 0700 if missing, opened without following links."""
    root_fd = open_dir(root, what)
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
            os.fsync(root_fd)
        except FileExistsError:
            pass
        try:
            return os.open(name, DIR_FLAGS, dir_fd=root_fd)
        except OSError as error:
            raise OutboxError(
                f"{root / name}: the {what} folder cannot be opened: {error.strerror}",
                hint="it must be a real directory, not a symbolic link",
            ) from None
    finally:
        os.close(root_fd)


def spool_temp(folder: Path, label: str) -> Path:
    """A fresh temporary name in ``folder`` in the one scheme start-up cleanup removes
    (:func:`remove_temps`): ``.tmp-<label>-<random>``. For writers outside this package
    (``exchange send``, ``exchange correct``) that spool a copy themselves."""
    return folder / f"{TEMP_PREFIX}{label}-{secrets.token_hex(8)}"


@contextlib.contextmanager
def write_temp(path: Path, mode: int = 0o400) -> Iterator[BinaryIO]:
    """Create ``path`` (a :func:`spool_temp` name) exclusively, never through a link, with
    exactly ``mode``; fsync it when the block succeeds and remove it when it fails. No inner
    temporary of its own, so a crash leaves only a name :func:`remove_temps` removes."""
    fd = os.open(path, NEW_FLAGS, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have cleared bits we asked for
        with os.fdopen(fd, "wb") as file:
            fd = -1  # the file object owns it now
            yield file
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise


@contextlib.contextmanager
def spooling(folder: Path) -> Iterator[None]:
    """Held by a writer outside the daemon (``exchange send``, ``exchange correct``) for as long
    as its :func:`spool_temp` file exists: a shared lock on the folder, so that a daemon
    starting meanwhile does not remove a temporary that is still being written. A writer that
    dies releases the lock with its last descriptor, so its leftover is removed next time."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def remove_temps(dir_fd: int) -> int:
    """Remove our own temporary files (regular files named ``.tmp-*``) from a folder, unless a
    writer holds :func:`spooling` on it (then they are left for the next start-up)."""
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    try:
        return _remove_temps_locked(dir_fd)
    finally:
        fcntl.flock(dir_fd, fcntl.LOCK_UN)


def _remove_temps_locked(dir_fd: int) -> int:
    removed = 0
    for name in os.listdir(dir_fd):
        info = lstat_at(dir_fd, name) if name.startswith(TEMP_PREFIX) else None
        if info is not None and stat.S_ISREG(info.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            removed += 1
    os.fsync(dir_fd)
    return removed


class QuarantineFolder:
    """``quarantine/<agreement>/``: entries moved in by ``renameat``, each beside a reason file
    written durably first (write-ordering invariant 2). Nothing here deletes an entry."""

    def __init__(self, agreement: str, path: Path, fd: int, clock: Clock) -> None:
        self.agreement = agreement
        self.path = path
        self.fd = fd
        self._clock = clock

    def move_in(
        self,
        src_fd: int,
        raw: bytes,
        refused: Refused,
        size: int | None,
        sha: Sha256 | None,
        expected: os.stat_result,
        crash_point: CrashPoint,
    ) -> Quarantined | Skipped | Retry:
        """Write the reason file, then move entry ``raw`` of ``src_fd`` in, if it is still the
        inode ``expected``. If the move fails the reason file is removed again."""
        when = self._clock.now()
        base = self._unique_base(f"{when:%Y%m%dT%H%M%S.%fZ}-{safe_name(raw)}")
        reason_name = base + REASON_SUFFIX
        record = {
            "agreement": self.agreement,
            "reason": refused.reason.value,
            "detail": refused.detail,
            "time": when.isoformat(),
            "size": size,
            "sha256": None if sha is None else sha.hex,
            "original_name": raw.decode("utf-8", "backslashreplace"),
            "original_name_hex": raw.hex(),
            "quarantined_as": base,
        }
        data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("ascii")
        try:
            write_file_at(self.fd, reason_name, data, 0o600)
        except OSError as error:
            detail = f"cannot write the quarantine reason file: {error.strerror}"
            return defer(self.agreement, raw, None, detail)
        crash_point("quarantine.after_reason_file")
        failed = self._rename_in(src_fd, raw, base, expected)
        if failed is not None:
            unlink_quietly(self.fd, reason_name)
            os.fsync(self.fd)
            return failed
        crash_point("quarantine.after_move")
        _log.error(
            "intake.refused",
            agreement=self.agreement,
            file=raw,
            reason_code=refused.reason.value,
            detail=refused.detail,
            size=size,
            sha256=None if sha is None else sha.hex,
        )
        return Quarantined(
            self.agreement,
            raw,
            self.path / base,
            self.path / reason_name,
            refused.reason,
            refused.detail,
            size,
            sha,
        )

    def _rename_in(
        self, src_fd: int, raw: bytes, base: str, expected: os.stat_result
    ) -> Skipped | Retry | None:
        """renameat the entry (whatever it is, never following it); None when it moved."""
        now = lstat_at(src_fd, raw)
        if now is None:
            return Skipped(SkipReason.VANISHED)
        if (now.st_dev, now.st_ino) != (expected.st_dev, expected.st_ino):
            return defer(self.agreement, raw, ReasonCode.CHANGED, "the entry was replaced")
        try:
            os.rename(raw, base, src_dir_fd=src_fd, dst_dir_fd=self.fd)
        except FileNotFoundError:
            return Skipped(SkipReason.VANISHED)
        except PermissionError:
            detail = "the entry cannot be moved into quarantine (permission denied)"
            return defer(self.agreement, raw, ReasonCode.PERMISSION, detail)
        except OSError as error:
            detail = f"cannot move the entry into quarantine: {error.strerror}"
            return defer(self.agreement, raw, None, detail)
        os.fsync(self.fd)
        os.fsync(src_fd)
        return None

    def _unique_base(self, stem: str) -> str:
        for attempt in range(1000):
            base = stem if attempt == 0 else f"{stem}-{attempt}"
            if lstat_at(self.fd, base) is None and lstat_at(self.fd, base + REASON_SUFFIX) is None:
                return base
        raise InvariantError(f"quarantine {self.agreement}: no free name for {stem[:40]}")

    def entries(self) -> list[Quarantined]:
        """Every quarantined entry with its reason, read back from the reason files (for the
        start-up reconciliation after crash point ``quarantine.after_move``). A reason file
        whose entry is absent (a crash at ``quarantine.after_reason_file``) is left out."""
        found = []
        for name in sorted(os.listdir(self.fd)):  # noqa: PTH208 - by descriptor
            if not name.endswith(REASON_SUFFIX) or name.startswith(TEMP_PREFIX):
                continue
            base = name[: -len(REASON_SUFFIX)]
            if lstat_at(self.fd, base) is None:
                continue
            entry = self._read_reason(name, base)
            if entry is not None:
                found.append(entry)
        return found

    def _read_reason(self, name: str, base: str) -> Quarantined | None:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd
        )
        with os.fdopen(fd, "rb") as file:
            data = file.read(1 << 16)
        try:
            record = json.loads(data)
            sha = record["sha256"]
            return Quarantined(
                agreement=self.agreement,
                original_name=bytes.fromhex(record["original_name_hex"]),
                path=self.path / base,
                reason_path=self.path / name,
                reason=ReasonCode(record["reason"]),
                detail=str(record["detail"]),
                size=None if record["size"] is None else int(record["size"]),
                sha256=None if sha is None else Sha256(sha),
            )
        except (ValueError, KeyError, TypeError):
            _log.error("quarantine.reason_unreadable", agreement=self.agreement, file=name)
            return None
