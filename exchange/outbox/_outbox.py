"""The :class:`Outbox`: one agreement's folders held open, and taking one entry. See the
package docstring for the rules."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Final

import structlog

from exchange.clock import Clock
from exchange.core.intake import (
    Accepted,
    Candidate,
    ContentChecker,
    Decision,
    FileKind,
    IntakeRules,
    Refused,
    content_checker,
    decide,
    is_candidate_name,
)
from exchange.core.stability import Observation
from exchange.errors import InvariantError
from exchange.model import ReasonCode, Sha256
from exchange.outbox._dirs import (
    NEW_FLAGS,
    TEMP_PREFIX,
    QuarantineFolder,
    identity,
    lstat_at,
    open_dir,
    open_subdir,
    remove_temps,
    unlink_quietly,
    write_all,
)
from exchange.outbox._values import (
    CrashPoint,
    OutboxError,
    OutboxMoved,
    Outcome,
    Quarantined,
    Removed,
    Retry,
    Skipped,
    SkipReason,
    Taken,
    defer,
    no_crash,
)

CHUNK_SIZE: Final = 1 << 20
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_AGREEMENT_ID: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_log = structlog.get_logger()


def _entry(name: bytes | str) -> bytes:
    """A directory entry name: anything with a slash would reach into another folder."""
    raw = os.fsencode(name)
    if not raw or b"/" in raw or b"\0" in raw or raw in (b".", b".."):
        raise InvariantError("outbox: a name from a listing is never empty, '.', '..' or has '/'")
    return raw


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
            self._fd = self._hold(open_dir(outbox, "outbox"))
            self._spool_fd = self._hold(open_subdir(spool_root, agreement, "spool"))
            self._quarantine_fd = self._hold(open_subdir(quarantine_root, agreement, "quarantine"))
            if os.fstat(self._fd).st_dev != os.fstat(self._quarantine_fd).st_dev:
                raise OutboxError(
                    f"{outbox}: the outbox and {self.quarantine_dir} are on different "
                    "filesystems; refused files are moved by rename, which cannot cross them",
                    hint="put the outbox and quarantine folders on the same filesystem",
                )
            self.quarantine_folder = QuarantineFolder(
                agreement, self.quarantine_dir, self._quarantine_fd, clock
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
        info = lstat_at(self._fd, _entry(name))
        return None if info is None else Observation.of(info)

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
        return remove_temps(self._spool_fd) + remove_temps(self._quarantine_fd)

    # --- taking ---------------------------------------------------------------------------

    def take(
        self, name: bytes | str, rules: IntakeRules, *, crash_point: CrashPoint = no_crash
    ) -> Outcome:
        """Take one entry: a durable spool copy (:class:`Taken`, the original left in place for
        :meth:`remove_original`), quarantine (:class:`Quarantined`), or not now."""
        raw = _entry(name)
        if not is_candidate_name(raw):
            return Skipped(SkipReason.NOT_CANDIDATE)
        before = lstat_at(self._fd, raw)
        if before is None:
            return Skipped(SkipReason.VANISHED)
        kind = FileKind.from_mode(before.st_mode)
        decision = decide(rules, Candidate(raw, before.st_size, kind, before.st_nlink))
        if isinstance(decision, Refused):
            size = before.st_size if kind is FileKind.REGULAR else None
            return self.quarantine_folder.move_in(
                self._fd, raw, decision, size, None, before, crash_point
            )
        try:
            fd = os.open(raw, _READ_FLAGS, dir_fd=self._fd)
        except FileNotFoundError:
            return Skipped(SkipReason.VANISHED)
        except PermissionError:
            return defer(
                self.agreement,
                raw,
                ReasonCode.PERMISSION,
                "the file cannot be read by this user (permission denied); fix its mode or "
                "group so the exchange service can read it",
            )
        except OSError as error:
            if error.errno == errno.ELOOP:
                return defer(
                    self.agreement, raw, ReasonCode.CHANGED, "the entry became a symbolic link"
                )
            return defer(self.agreement, raw, None, f"the file cannot be opened: {error.strerror}")
        try:
            opened = os.fstat(fd)
            if identity(opened) != identity(before) or opened.st_nlink != 1:
                return defer(
                    self.agreement, raw, ReasonCode.CHANGED, "the file changed before it was read"
                )
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
        temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            out = os.open(temp, NEW_FLAGS, 0o600, dir_fd=self._spool_fd)
        except OSError as error:
            return defer(self.agreement, raw, None, f"cannot create a spool file: {error.strerror}")
        try:
            try:
                count, digest, verdict = self._copy(fd, out, checker, opened.st_size, accepted)
                complete = count == opened.st_size
                if isinstance(verdict, Accepted):
                    accepted = verdict
                if not self._unchanged(raw, fd, opened) or not (complete or verdict is not None):
                    return defer(
                        self.agreement,
                        raw,
                        ReasonCode.CHANGED,
                        "the file changed while it was being read; it is taken once stable",
                    )
                if not isinstance(verdict, Refused):
                    crash_point("intake.after_validate")
                    os.fchmod(out, 0o400)
                    crash_point("intake.after_spool_write")
                    os.fsync(out)
            finally:
                os.close(out)
            sha = Sha256.of_digest(digest) if complete else None
            if isinstance(verdict, Refused):
                unlink_quietly(self._spool_fd, temp)
                return self.quarantine_folder.move_in(
                    self._fd, raw, verdict, opened.st_size, sha, opened, crash_point
                )
            if sha is None:
                raise InvariantError("outbox: an accepted file was not read to its end")
            already = self._spooled(sha.hex, count)
            if not already:
                os.rename(temp, sha.hex, src_dir_fd=self._spool_fd, dst_dir_fd=self._spool_fd)
            os.fsync(self._spool_fd)
        except OSError as error:
            return defer(
                self.agreement, raw, None, f"cannot write the spool copy: {error.strerror}"
            )
        finally:
            unlink_quietly(self._spool_fd, temp)
        crash_point("intake.after_spool_copy")
        _log.info(
            "intake.accepted",
            agreement=self.agreement,
            file=raw,
            sha256=sha.hex,
            size=count,
            state="already-spooled" if already else "spooled",
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
            identity=identity(opened),
        )

    def _copy(
        self, fd: int, out: int, checker: ContentChecker | None, size: int, metadata: Accepted
    ) -> tuple[int, bytes, Decision | None]:
        """Read ``fd`` once into ``out``, hashing and checking each chunk (module rule 2).

        Returns the bytes read, the SHA-256 of what was read, and the content verdict: a
        refusal as soon as one is certain (reading stops there), the final decision once the
        whole file was read, or None if the file turned out longer than ``size`` (growing).
        """
        digest, count = hashlib.sha256(), 0
        while chunk := os.read(fd, self._chunk_size):
            count += len(chunk)
            if count > size:
                return count, digest.digest(), None
            digest.update(chunk)
            if checker is not None and (refused := checker.feed(chunk)) is not None:
                return count, digest.digest(), refused
            write_all(out, chunk)
        if count != size:
            return count, digest.digest(), None
        return count, digest.digest(), metadata if checker is None else checker.finish()

    def _unchanged(self, raw: bytes, fd: int, opened: os.stat_result) -> bool:
        """The descriptor and the name both still show the file as it was opened."""
        by_name = lstat_at(self._fd, raw)
        if by_name is None:
            return False
        return identity(os.fstat(fd)) == identity(opened) == identity(by_name)

    def _spooled(self, name: str, size: int) -> bool:
        """True if the spool already holds this content (content-addressed, so equal size of a
        regular file under the same SHA-256 name is the same bytes we just hashed)."""
        info = lstat_at(self._spool_fd, name)
        return info is not None and stat.S_ISREG(info.st_mode) and info.st_size == size

    def remove_original(
        self, taken: Taken, *, crash_point: CrashPoint = no_crash
    ) -> Removed | Retry:
        """After the caller's ledger commit: unlink the outbox original if the name still holds
        the file that was taken, then fsync the outbox directory (module rule 3)."""
        self._check_mine(taken)
        raw = taken.original_name
        try:
            now = os.stat(raw, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return Removed(self.agreement, raw, was_present=False)
        if identity(now) != taken.identity:
            return defer(
                self.agreement,
                raw,
                ReasonCode.CHANGED,
                "the outbox entry was replaced after it was taken; the new file is taken on its own",
            )
        crash_point("intake.before_outbox_unlink")
        try:
            os.unlink(raw, dir_fd=self._fd)
        except PermissionError:
            return defer(
                self.agreement,
                raw,
                ReasonCode.PERMISSION,
                "the file cannot be removed from the outbox",
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
        self, taken: Taken, reason: ReasonCode, detail: str, *, crash_point: CrashPoint = no_crash
    ) -> Quarantined | Skipped | Retry:
        """Move a taken file's original to quarantine (e.g. a duplicate the ledger knows),
        only if the name still holds the file that was taken. The spool copy is left alone."""
        self._check_mine(taken)
        raw = taken.original_name
        now = lstat_at(self._fd, raw)
        if now is None:
            return Skipped(SkipReason.VANISHED)
        if identity(now) != taken.identity:
            return defer(self.agreement, raw, ReasonCode.CHANGED, "the outbox entry was replaced")
        refused = Refused(reason, detail)
        return self.quarantine_folder.move_in(
            self._fd, raw, refused, taken.size, taken.sha256, now, crash_point
        )

    def quarantine(
        self,
        name: bytes | str,
        reason: ReasonCode,
        detail: str,
        *,
        crash_point: CrashPoint = no_crash,
    ) -> Quarantined | Skipped | Retry:
        """Move an outbox entry to quarantine without opening it (e.g. after repeated
        ``Retry(PERMISSION)``). ``detail`` must hold no file name and no cell value."""
        raw = _entry(name)
        now = lstat_at(self._fd, raw)
        if now is None:
            return Skipped(SkipReason.VANISHED)
        size = now.st_size if stat.S_ISREG(now.st_mode) else None
        return self.quarantine_folder.move_in(
            self._fd, raw, Refused(reason, detail), size, None, now, crash_point
        )

    def quarantine_spool(
        self, sha256: Sha256, reason: ReasonCode, detail: str, *, crash_point: CrashPoint = no_crash
    ) -> Quarantined | Skipped | Retry:
        """Move a spool copy into quarantine (a poisoned delivery, docs/DESIGN.md). Its
        ``original_name`` is the spool name; the ledger knows the dataset's real name."""
        raw = sha256.hex.encode("ascii")
        info = lstat_at(self._spool_fd, raw)
        if info is None:
            return Skipped(SkipReason.VANISHED)
        refused = Refused(reason, detail)
        return self.quarantine_folder.move_in(
            self._spool_fd, raw, refused, info.st_size, sha256, info, crash_point
        )

    def quarantined(self) -> list[Quarantined]:
        """Every entry in this agreement's quarantine, read back from its reason file."""
        return self.quarantine_folder.entries()
