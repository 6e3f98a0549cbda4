"""Taking files in from an agreement's outbox: a durable spool copy, or quarantine.

Layer 2 (local filesystem). :mod:`exchange.core.intake` decides from values; this module does
the I/O around it and returns what happened as a frozen value. The service logs nothing more
for these events than what is logged here (``intake.accepted``, ``intake.refused``,
``intake.deferred``, ``intake.removed``), and turns refusals and deferrals into incidents.

Rules:

1. **Never through a link, never blocking.** Each outbox, spool and quarantine directory is
   opened once, at start-up, with ``O_DIRECTORY|O_NOFOLLOW``, and every entry is reached
   relative to those descriptors. An entry is ``lstat``-ed first: a symlink, FIFO, socket,
   device or directory is moved to quarantine by ``renameat`` and never opened. A regular file
   is opened with ``O_NOFOLLOW|O_NONBLOCK`` (a swap to a FIFO between ``lstat`` and ``open``
   cannot hang us) and checked again with ``fstat``: same inode, one link.
2. **Read once.** The content is streamed once: SHA-256, byte count and the intake content
   checks are fed chunk by chunk while the bytes go into a spool temporary file. A file over
   the agreement's cap is refused from its ``lstat`` size, before a byte is read.
3. **Write ordering (docs/DESIGN.md invariant 1):** the spool copy
   ``spool/<agreement>/<sha256>`` (mode 0400) is written to a temporary name, fsynced, renamed
   and the spool directory fsynced *before* :meth:`Outbox.take` returns :class:`Taken`; the
   original stays in the outbox until the caller, after its ledger commit, calls
   :meth:`Outbox.remove_original`, which unlinks it only if the name still holds the same inode
   and then fsyncs the outbox directory. The crash points in :data:`CRASH_POINTS` mark each step.
4. **Not taken in a mixed state.** Size, mtime, ctime and inode are compared before reading,
   after reading (``fstat`` of the descriptor and ``fstatat`` of the name) and before removal;
   any difference abandons the attempt (the spool temporary file is removed) with
   ``Retry(CHANGED)``.
5. **Nothing is ever deleted** but our own temporary files. A refusal writes
   ``quarantine/<agreement>/<UTC time>-<safe name>.reason.json`` (atomic write) and then renames
   the entry beside it (docs/DESIGN.md invariant 2). The reason file names columns, never cell
   values, and carries the original name only escaped and as hex.
6. **Permission denied is not a crash loop.** A file we may not read is left in place and
   reported as ``Retry(PERMISSION)``; the caller backs off, raises an incident, and may
   :meth:`Outbox.quarantine` it later.
7. Duplicates need the ledger, which this module does not import: :class:`Taken` carries the
   SHA-256 and the caller decides, then calls :meth:`Outbox.remove_original` or
   :meth:`Outbox.quarantine_original` with reason ``duplicate``.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from exchange.clock import Clock
from exchange.core.intake import (
    Accepted,
    Candidate,
    FileKind,
    IntakeRules,
    Refused,
    content_checker,
    decide,
    is_candidate_name,
)
from exchange.core.stability import Observation
from exchange.errors import ExchangeError, InvariantError
from exchange.model import ReasonCode, Sha256

__all__ = [
    "CRASH_POINTS",
    "CrashPoint",
    "Outbox",
    "OutboxError",
    "OutboxMoved",
    "Outcome",
    "Quarantined",
    "Removed",
    "Retry",
    "SkipReason",
    "Skipped",
    "Taken",
]

#: Named steps where the crash tests kill the process (docs/DESIGN.md, TESTPLAN D31).
CRASH_POINTS: Final = (
    "intake.after_validate",  # content streamed and judged; spool temp written, not fsynced
    "intake.after_spool_write",  # spool temp complete, before its fsync
    "intake.after_spool_copy",  # spool copy renamed and directory fsynced (durable)
    "intake.before_outbox_unlink",  # identity re-checked, original about to be unlinked
    "intake.after_outbox_unlink",  # unlinked, outbox directory fsynced
    "quarantine.after_reason_file",  # reason file durable, entry not yet moved
    "quarantine.after_move",  # entry renamed into quarantine, directories fsynced
)

CrashPoint = Callable[[str], None]
CHUNK_SIZE: Final = 1 << 20
_TEMP_PREFIX: Final = ".tmp-"
_REASON_SUFFIX: Final = ".reason.json"
_SAFE_BYTES: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-"
)
_MAX_SAFE_NAME: Final = 160  # keeps "<time>-<name>-<n>.reason.json" well under NAME_MAX (255)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_log = structlog.get_logger()


def _no_crash(_name: str) -> None:
    """The default crash hook: production code never crashes on purpose."""


class OutboxError(ExchangeError):
    """An outbox, spool or quarantine directory cannot be used as configured."""

    default_hint = "check the folder paths in config/exchange.toml and that the folders exist"


class OutboxMoved(OutboxError):
    """A folder path no longer leads to the directory opened at start-up (TESTPLAN A2)."""

    default_hint = (
        "someone replaced the folder or a parent with a link or another directory; intake for "
        "this agreement is paused: restore the folder, check for tampering, then restart"
    )


# --- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Taken:
    """The spool copy is durable; the original is still in the outbox (module rule 3)."""

    agreement: str
    original_name: bytes
    spool_path: Path
    sha256: Sha256
    size: int
    format: str
    empty: bool  # an empty extract the agreement allows: sent, and flagged
    already_spooled: bool  # identical content was already in the spool (a retake after a crash)
    identity: tuple[int, int, int, int, int]  # the original's dev, ino, size, mtime_ns, ctime_ns


@dataclass(frozen=True, slots=True)
class Quarantined:
    agreement: str
    original_name: bytes
    path: Path  # where the entry now is
    reason_path: Path
    reason: ReasonCode
    detail: str
    size: int | None
    sha256: Sha256 | None  # known when the content was read


class SkipReason(enum.Enum):
    NOT_CANDIDATE = "not-candidate"  # hidden or temporary name: not ours to touch
    VANISHED = "vanished"  # the entry went away before we got to it


@dataclass(frozen=True, slots=True)
class Removed:
    """The original is gone from the outbox and the removal is durable."""

    agreement: str
    original_name: bytes
    was_present: bool  # False: it was already gone (a retry after a crash past the unlink)


@dataclass(frozen=True, slots=True)
class Skipped:
    """Nothing to do and nothing to report (a hidden name, an entry that vanished)."""

    reason: SkipReason


@dataclass(frozen=True, slots=True)
class Retry:
    """Left in place; try again later (after a backoff for ``PERMISSION``)."""

    reason: ReasonCode | None  # CHANGED, PERMISSION, or None for a local I/O failure
    detail: str


Outcome = Taken | Quarantined | Skipped | Retry
_Identity = tuple[int, int, int, int, int]


def _identity(info: os.stat_result) -> _Identity:
    """What must not change while a file is being taken (module rule 4)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _safe_name(raw: bytes) -> str:
    """An allow-listed spelling of an outside name: other bytes become ``%XX``."""
    return "".join(chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in raw)[:_MAX_SAFE_NAME]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _write_file_at(dir_fd: int, final: str, data: bytes, mode: int) -> None:
    """``fsutil.atomic_write`` relative to a held directory descriptor: temp, fsync, rename,
    directory fsync; the temporary file is removed on any failure."""
    temp = f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(temp, _NEW_FLAGS, mode, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink_quietly(dir_fd, temp)
        raise
    os.fsync(dir_fd)


def _open_dir(path: Path, what: str) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        raise OutboxError(f"{path}: the {what} folder does not exist") from None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OutboxError(
                f"{path}: the {what} folder is a symbolic link or not a directory",
                hint="point the configuration at the real directory; links are not followed",
            ) from None
        raise OutboxError(f"{path}: the {what} folder cannot be opened: {error.strerror}") from None


def _open_subdir(root: Path, name: str, what: str) -> int:
    """``root/name``, created 0700 if missing, opened without following links."""
    root_fd = _open_dir(root, what)
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
            os.fsync(root_fd)
        except FileExistsError:
            pass
        return _open_at(root_fd, root, name, what)
    finally:
        os.close(root_fd)


def _open_at(root_fd: int, root: Path, name: str, what: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=root_fd)
    except OSError as error:
        raise OutboxError(
            f"{root / name}: the {what} folder cannot be opened: {error.strerror}",
            hint="it must be a real directory, not a symbolic link",
        ) from None


_AGREEMENT_ID = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class Outbox:
    """One agreement's outbox, with its spool and quarantine folders, held open by descriptor.

    Build it at start-up; call :meth:`revalidate` periodically (daily is enough) and pause the
    agreement on :class:`OutboxMoved`. Not thread-safe: one worker takes files at a time.
    """

    def __init__(
        self,
        agreement: str,
        outbox: Path,
        spool_root: Path,
        quarantine_root: Path,
        *,
        clock: Clock,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if not agreement or agreement[0] == "-" or not set(agreement) <= _AGREEMENT_ID:
            raise OutboxError(f"agreement id {agreement!r} is not safe as a folder name")
        self.agreement = agreement
        self.path = outbox
        self.spool_dir = spool_root / agreement
        self.quarantine_dir = quarantine_root / agreement
        self._clock = clock
        self._chunk_size = chunk_size
        self._fds: list[int] = []
        try:
            self._fd = self._hold(_open_dir(outbox, "outbox"))
            self._spool_fd = self._hold(_open_subdir(spool_root, agreement, "spool"))
            self._quarantine_fd = self._hold(_open_subdir(quarantine_root, agreement, "quarantine"))
            if os.fstat(self._fd).st_dev != os.fstat(self._quarantine_fd).st_dev:
                raise OutboxError(
                    f"{outbox}: the outbox and {self.quarantine_dir} are on different "
                    "filesystems; refused files are moved by rename, which cannot cross them",
                    hint="put the outbox and quarantine folders on the same filesystem",
                )
        except BaseException:
            self.close()
            raise

    def _hold(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- looking --------------------------------------------------------------------------

    def names(self) -> list[bytes]:
        """Candidate names in the held directory (hidden and temporary names left out)."""
        listed = (os.fsencode(name) for name in os.listdir(self._fd))  # noqa: PTH208 - by descriptor
        return sorted(name for name in listed if is_candidate_name(name))

    def observe(self, name: bytes | str) -> Observation | None:
        """An ``lstat`` of the entry for the stability tracker; None if it is gone."""
        try:
            return Observation.of(
                os.stat(os.fsencode(name), dir_fd=self._fd, follow_symlinks=False)
            )
        except FileNotFoundError:
            return None

    def spool_path(self, sha256: Sha256) -> Path:
        return self.spool_dir / sha256.hex

    def revalidate(self) -> None:
        """Raise :class:`OutboxMoved` if a folder path no longer leads to the held directory
        (the folder or a parent was swapped for a link or another directory, TESTPLAN A2)."""
        for what, path, fd in (
            ("outbox", self.path, self._fd),
            ("spool", self.spool_dir, self._spool_fd),
            ("quarantine", self.quarantine_dir, self._quarantine_fd),
        ):
            held = os.fstat(fd)
            try:
                link = os.lstat(path)
                target = os.stat(path)  # noqa: PTH116 - lstat and stat side by side
            except OSError as error:
                raise OutboxMoved(f"{path}: the {what} folder is gone: {error.strerror}") from None
            if stat.S_ISLNK(link.st_mode):
                raise OutboxMoved(f"{path}: the {what} folder was replaced by a symbolic link")
            if (target.st_dev, target.st_ino) != (held.st_dev, held.st_ino):
                raise OutboxMoved(
                    f"{path}: the {what} folder, or a parent, now leads to a different "
                    "directory than the one opened at start-up"
                )

    def remove_stale_temps(self) -> int:
        """Remove our own temporary files left in spool and quarantine by a crash (partial
        plaintext copies; their originals are still in the outbox). Returns how many."""
        removed = 0
        for fd in (self._spool_fd, self._quarantine_fd):
            for name in os.listdir(fd):  # noqa: PTH208 - by descriptor
                if name.startswith(_TEMP_PREFIX):
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        os.unlink(name, dir_fd=fd)
                        removed += 1
            os.fsync(fd)
        return removed

    # --- taking ---------------------------------------------------------------------------

    def take(
        self, name: bytes | str, rules: IntakeRules, *, crash_point: CrashPoint = _no_crash
    ) -> Outcome:
        """Take one entry: a durable spool copy (:class:`Taken`, the original left in place for
        :meth:`remove_original`), quarantine (:class:`Quarantined`), or not now."""
        raw = os.fsencode(name)
        if not is_candidate_name(raw):
            return Skipped(SkipReason.NOT_CANDIDATE)
        try:
            before = os.stat(raw, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return Skipped(SkipReason.VANISHED)
        kind = FileKind.from_mode(before.st_mode)
        decision = decide(rules, Candidate(raw, before.st_size, kind, before.st_nlink))
        if isinstance(decision, Refused):
            size = before.st_size if kind is FileKind.REGULAR else None
            return self._quarantine(raw, decision, size, None, before, crash_point)
        try:
            fd = os.open(raw, _READ_FLAGS, dir_fd=self._fd)
        except FileNotFoundError:
            return Skipped(SkipReason.VANISHED)
        except PermissionError:
            return self._defer(
                raw,
                ReasonCode.PERMISSION,
                "the file cannot be read by this user (permission denied); fix its mode or "
                "group so the exchange service can read it",
            )
        except OSError as error:
            if error.errno == errno.ELOOP:
                return self._defer(raw, ReasonCode.CHANGED, "the entry became a symbolic link")
            return self._defer(raw, None, f"the file cannot be opened: {error.strerror}")
        try:
            opened = os.fstat(fd)
            if _identity(opened) != _identity(before) or opened.st_nlink != 1:
                return self._defer(raw, ReasonCode.CHANGED, "the file changed before it was read")
            os.set_blocking(fd, True)
            return self._stream(raw, fd, rules, decision, opened, crash_point)
        finally:
            os.close(fd)

    def _stream(
        self,
        raw: bytes,
        fd: int,
        rules: IntakeRules,
        accepted: Accepted,
        opened: os.stat_result,
        crash_point: CrashPoint,
    ) -> Outcome:
        # A 0-byte file the agreement allows has no content to check (decide flagged it).
        checker = None if accepted.empty else content_checker(rules, accepted)
        digest, count, refused = hashlib.sha256(), 0, None
        temp = f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            out = os.open(temp, _NEW_FLAGS, 0o600, dir_fd=self._spool_fd)
        except OSError as error:
            return self._defer(raw, None, f"cannot create a spool file: {error.strerror}")
        try:
            try:
                while chunk := os.read(fd, self._chunk_size):
                    count += len(chunk)
                    if count > opened.st_size:
                        break  # still growing: judged as changed below
                    digest.update(chunk)
                    if checker is not None and (refused := checker.feed(chunk)) is not None:
                        break
                    _write_all(out, chunk)
                if refused is None and checker is not None and count == opened.st_size:
                    verdict = checker.finish()
                    if isinstance(verdict, Refused):
                        refused = verdict
                    else:
                        accepted = verdict
                if not self._unchanged(raw, fd, opened) or (
                    refused is None and count != opened.st_size
                ):
                    return self._defer(
                        raw,
                        ReasonCode.CHANGED,
                        "the file changed while it was being read; it is taken once stable",
                    )
                if refused is not None:
                    sha = Sha256(digest.hexdigest()) if count == opened.st_size else None
                    return self._quarantine(raw, refused, opened.st_size, sha, opened, crash_point)
                crash_point("intake.after_validate")
                os.fchmod(out, 0o400)
                crash_point("intake.after_spool_write")
                os.fsync(out)
            finally:
                os.close(out)
            sha = Sha256(digest.hexdigest())
            already = self._spooled(sha.hex, count)
            if already:
                _unlink_quietly(self._spool_fd, temp)
            else:
                os.rename(temp, sha.hex, src_dir_fd=self._spool_fd, dst_dir_fd=self._spool_fd)
            os.fsync(self._spool_fd)
        except OSError as error:
            return self._defer(raw, None, f"cannot write the spool copy: {error.strerror}")
        finally:
            _unlink_quietly(self._spool_fd, temp)
        crash_point("intake.after_spool_copy")
        _log.info(
            "intake.accepted",
            agreement=self.agreement,
            file=raw,
            sha256=sha.hex,
            size=count,
            state="spooled" if not already else "already-spooled",
        )
        return Taken(
            agreement=self.agreement,
            original_name=raw,
            spool_path=self.spool_path(sha),
            sha256=sha,
            size=count,
            format=accepted.format,
            empty=accepted.empty,
            already_spooled=already,
            identity=_identity(opened),
        )

    def _unchanged(self, raw: bytes, fd: int, opened: os.stat_result) -> bool:
        """The descriptor and the name both still show the file as it was opened."""
        try:
            by_name = os.stat(raw, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return _identity(os.fstat(fd)) == _identity(opened) == _identity(by_name)

    def _spooled(self, name: str, size: int) -> bool:
        """True if the spool already holds this content (content-addressed, so equal size of a
        regular file under the same SHA-256 name is the same bytes we just hashed)."""
        try:
            info = os.stat(name, dir_fd=self._spool_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == size

    def remove_original(
        self, taken: Taken, *, crash_point: CrashPoint = _no_crash
    ) -> Removed | Retry:
        """After the caller's ledger commit: unlink the outbox original if the name still holds
        the file that was taken, then fsync the outbox directory (module rule 3)."""
        self._check_mine(taken)
        raw = taken.original_name
        try:
            now = os.stat(raw, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return Removed(self.agreement, raw, was_present=False)
        if _identity(now) != taken.identity:
            return self._defer(
                raw,
                ReasonCode.CHANGED,
                "the outbox entry was replaced after it was taken; the new file is taken on its own",
            )
        crash_point("intake.before_outbox_unlink")
        try:
            os.unlink(raw, dir_fd=self._fd)
        except PermissionError:
            return self._defer(
                raw, ReasonCode.PERMISSION, "the file cannot be removed from the outbox"
            )
        os.fsync(self._fd)
        crash_point("intake.after_outbox_unlink")
        _log.debug("intake.removed", agreement=self.agreement, file=raw, sha256=taken.sha256.hex)
        return Removed(self.agreement, raw, was_present=True)

    def _check_mine(self, taken: Taken) -> None:
        if taken.agreement != self.agreement:
            raise InvariantError(
                f"outbox {self.agreement}: given a file taken from {taken.agreement}"
            )

    # --- quarantine -----------------------------------------------------------------------

    def quarantine_original(
        self, taken: Taken, reason: ReasonCode, detail: str, *, crash_point: CrashPoint = _no_crash
    ) -> Quarantined | Skipped | Retry:
        """Move a taken file's original to quarantine (e.g. a duplicate the ledger knows),
        only if the name still holds the file that was taken. The spool copy is left alone."""
        self._check_mine(taken)
        raw = taken.original_name
        try:
            now = os.stat(raw, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return Skipped(SkipReason.VANISHED)
        if _identity(now) != taken.identity:
            return self._defer(raw, ReasonCode.CHANGED, "the outbox entry was replaced")
        refused = Refused(reason, detail)
        return self._quarantine(raw, refused, taken.size, taken.sha256, now, crash_point)

    def quarantine(
        self,
        name: bytes | str,
        reason: ReasonCode,
        detail: str,
        *,
        crash_point: CrashPoint = _no_crash,
    ) -> Quarantined | Skipped | Retry:
        """Move an outbox entry to quarantine without opening it (e.g. after repeated
        ``Retry(PERMISSION)``). ``detail`` must hold no file name and no cell value."""
        raw = os.fsencode(name)
        try:
            now = os.stat(raw, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return Skipped(SkipReason.VANISHED)
        size = now.st_size if stat.S_ISREG(now.st_mode) else None
        return self._quarantine(raw, Refused(reason, detail), size, None, now, crash_point)

    def _quarantine(
        self,
        raw: bytes,
        refused: Refused,
        size: int | None,
        sha: Sha256 | None,
        expected: os.stat_result,
        crash_point: CrashPoint,
    ) -> Quarantined | Skipped | Retry:
        when = self._clock.now()
        base = self._unique_base(f"{when:%Y%m%dT%H%M%S.%fZ}-{_safe_name(raw)}")
        reason_name = base + _REASON_SUFFIX
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
            _write_file_at(self._quarantine_fd, reason_name, data, 0o600)
        except OSError as error:
            return self._defer(raw, None, f"cannot write the quarantine reason: {error.strerror}")
        crash_point("quarantine.after_reason_file")
        outcome = self._move_to_quarantine(raw, base, expected)
        if outcome is not None:
            _unlink_quietly(self._quarantine_fd, reason_name)
            os.fsync(self._quarantine_fd)
            return outcome
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
            agreement=self.agreement,
            original_name=raw,
            path=self.quarantine_dir / base,
            reason_path=self.quarantine_dir / reason_name,
            reason=refused.reason,
            detail=refused.detail,
            size=size,
            sha256=sha,
        )

    def _move_to_quarantine(
        self, raw: bytes, base: str, expected: os.stat_result
    ) -> Skipped | Retry | None:
        """renameat the entry (whatever it is, never following it); None when it moved."""
        try:
            now = os.stat(raw, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return Skipped(SkipReason.VANISHED)
        if (now.st_dev, now.st_ino) != (expected.st_dev, expected.st_ino):
            return self._defer(raw, ReasonCode.CHANGED, "the entry was replaced")
        try:
            os.rename(raw, base, src_dir_fd=self._fd, dst_dir_fd=self._quarantine_fd)
        except FileNotFoundError:
            return Skipped(SkipReason.VANISHED)
        except PermissionError:
            return self._defer(
                raw,
                ReasonCode.PERMISSION,
                "the entry cannot be moved out of the outbox (permission denied)",
            )
        except OSError as error:
            return self._defer(raw, None, f"cannot move the entry to quarantine: {error.strerror}")
        os.fsync(self._quarantine_fd)
        os.fsync(self._fd)
        return None

    def _unique_base(self, stem: str) -> str:
        for attempt in range(1000):
            base = stem if attempt == 0 else f"{stem}-{attempt}"
            if not any(self._exists_in_quarantine(name) for name in (base, base + _REASON_SUFFIX)):
                return base
        raise InvariantError(f"quarantine {self.agreement}: no free name for {stem[:40]}")

    def _exists_in_quarantine(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self._quarantine_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _defer(self, raw: bytes, reason: ReasonCode | None, detail: str) -> Retry:
        _log.warning(
            "intake.deferred",
            agreement=self.agreement,
            file=raw,
            reason_code=None if reason is None else reason.value,
            detail=detail,
        )
        return Retry(reason, detail)
