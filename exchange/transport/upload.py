"""The atomic upload recipe over an SFTP session, for one file and pipelined over many.

Rules (STYLE item 8; ``port`` rule 2):

1. One recipe, in this order: exclusive create of the temporary name (a leftover of an
   earlier attempt is removed and the create tried once more), WRITE requests at increasing
   offsets, every WRITE acknowledged with OK, the acknowledged byte count equal to the bytes
   written (and to ``expected_size`` when given), fsync if the hub offers it, CLOSE
   acknowledged, then ``posix-rename`` onto the final name. Any failure before the rename
   removes the temporary name (best effort: over a dead connection the next attempt does).
2. The rename is sent only after every earlier status for that file came back OK, because
   the server keeps executing requests after one failed: pipelining a rename behind the
   writes could publish a short file.
3. Requests are pipelined: WRITEs without waiting (at most ``MAX_OUTSTANDING`` unanswered),
   fsync and close together; :func:`put_many` runs each step for a batch of files at once,
   so N small files cost three round trips per batch instead of five per file.
4. This module never imports paramiko: it talks to a :class:`Session`, which the paramiko
   adapter in ``exchange/transport/__init__.py`` implements.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Protocol

from exchange.errors import TransportError
from exchange.transport.port import (
    EntryKind,
    PutResult,
    RemoteRefusedEntry,
    SizeMismatchError,
    check_remote_path,
    part_name,
)

#: WRITE requests in flight per file before we wait for the oldest: 64 x 255 KiB = 16 MiB,
#: far beyond the 2 MiB window OpenSSH grants, so the window, not us, is the limit.
MAX_OUTSTANDING = 64
#: Files in flight in one :func:`put_many` batch.
BATCH = 32


class Session(Protocol):
    """One live SFTP conversation. ``send_*`` return a request number; ``wait_*`` block for
    its answer and raise ``OSError`` for an error status (errno ENOENT/EACCES, or None)."""

    write_size: int
    fsync: bool

    def send_open_excl(self, path: str) -> int: ...
    def send_write(self, handle: bytes, offset: int, data: bytes | memoryview) -> int: ...
    def send_fsync(self, handle: bytes) -> int: ...
    def send_close(self, handle: bytes) -> int: ...
    def send_rename(self, old: str, new: str) -> int: ...
    def send_remove(self, path: str) -> int: ...
    def wait_status(self, number: int) -> None: ...
    def wait_handle(self, number: int) -> bytes: ...
    def kind_of(self, path: str) -> EntryKind | None: ...
    def discard(self, handle: bytes | None, path: str) -> None:
        """Best effort: close ``handle`` and remove ``path``; never raises."""
        ...

    def guard(self, action: str, path: str) -> AbstractContextManager[None]:
        """Translate failures inside the block into transport errors (see ``_classify``)."""
        ...

    def classify(self, error: Exception, action: str, path: str) -> TransportError: ...


def open_temporary(session: Session, part: str) -> bytes:
    """Create ``part`` exclusively, replacing a leftover regular file of an earlier attempt."""
    with session.guard("create", part):
        try:
            return session.wait_handle(session.send_open_excl(part))
        except OSError as error:
            if error.errno in (errno.EACCES, errno.ENOENT):
                raise
            kind = session.kind_of(part)
            if kind is None:
                raise
            if kind is not EntryKind.REGULAR:
                raise RemoteRefusedEntry(
                    f"{part}: exists and is not a regular file; refused"
                ) from None
            session.wait_status(session.send_remove(part))
            return session.wait_handle(session.send_open_excl(part))


class SessionWriter:
    """Buffers writes into requests of ``session.write_size`` and sends them pipelined."""

    def __init__(self, session: Session, handle: bytes, part: str) -> None:
        self._session = session
        self._handle = handle
        self._part = part
        self._size = session.write_size
        self._buffer = bytearray()
        self._pending: deque[tuple[int, int]] = deque()
        self._offset = 0
        self.bytes_written = 0
        self.acknowledged = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        count = len(data)
        with self._session.guard("write", self._part):
            if not self._buffer and count >= self._size:
                view = memoryview(data)
                whole = count - count % self._size
                for start in range(0, whole, self._size):
                    self._send(view[start : start + self._size])
                self._buffer += view[whole:]
            else:
                self._buffer += data
                while len(self._buffer) >= self._size:
                    self._send(bytes(self._buffer[: self._size]))
                    del self._buffer[: self._size]
        self.bytes_written += count
        return count

    def _send(self, chunk: bytes | memoryview) -> None:
        number = self._session.send_write(self._handle, self._offset, chunk)
        self._pending.append((number, len(chunk)))
        self._offset += len(chunk)
        while len(self._pending) > MAX_OUTSTANDING:
            self._ack_oldest()

    def _ack_oldest(self) -> None:
        number, length = self._pending.popleft()
        self._session.wait_status(number)
        self.acknowledged += length

    def finish(self) -> None:
        """Send what is buffered and wait until every WRITE is acknowledged."""
        with self._session.guard("write", self._part):
            if self._buffer:
                self._send(bytes(self._buffer))
                self._buffer.clear()
            while self._pending:
                self._ack_oldest()


def commit(
    session: Session, handle: bytes, part: str, final: str, acknowledged: int, written: int
) -> None:
    """fsync + close (pipelined), check the byte count, then rename (rule 2)."""
    with session.guard("write", part):
        numbers = [session.send_fsync(handle)] if session.fsync else []
        numbers.append(session.send_close(handle))
        for number in numbers:
            session.wait_status(number)
    if acknowledged != written:
        raise SizeMismatchError.remote(final, written, acknowledged)
    with session.guard("rename", final):
        session.wait_status(session.send_rename(part, final))


class SessionUpload:
    """:class:`~exchange.transport.port.AtomicUpload` over a :class:`Session`."""

    def __init__(self, session: Session, final: str, expected_size: int | None) -> None:
        self._session = session
        self._final = final
        self._part = part_name(final)
        self._expected = expected_size
        self._handle: bytes | None = None
        self._writer: SessionWriter | None = None
        self.result: PutResult | None = None

    def __enter__(self) -> SessionWriter:
        self._handle = open_temporary(self._session, self._part)
        self._writer = SessionWriter(self._session, self._handle, self._part)
        return self._writer

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._writer is not None and self._handle is not None
        writer = self._writer
        try:
            if exc is not None:
                raise exc
            if self._expected is not None and writer.bytes_written != self._expected:
                raise SizeMismatchError.local(self._final, self._expected, writer.bytes_written)
            writer.finish()
            commit(
                self._session,
                self._handle,
                self._part,
                self._final,
                writer.acknowledged,
                writer.bytes_written,
            )
        except BaseException:
            # The handle is closed already if commit got as far as the rename; closing an
            # unknown handle is harmless (the server answers with an error we ignore).
            self._session.discard(self._handle, self._part)
            if exc is not None:
                return  # let the caller's own exception propagate unchanged
            raise
        self.result = PutResult(self._final, writer.bytes_written)


def put_many(session: Session, items: Sequence[tuple[str, bytes]]) -> list[PutResult]:
    """Upload small files in pipelined batches; see :meth:`SftpTransport.put_many`."""
    for final, _data in items:
        check_remote_path(final)
    results: list[PutResult] = []
    errors: list[TransportError] = []
    for start in range(0, len(items), BATCH):
        done, failed = _put_batch(session, items[start : start + BATCH])
        results += done
        errors += failed
    if errors:
        raise errors[0]
    return results


def _put_batch(
    session: Session, batch: Sequence[tuple[str, bytes]]
) -> tuple[list[PutResult], list[TransportError]]:
    errors: list[TransportError] = []
    parts = [part_name(final) for final, _ in batch]

    def failed(index: int, error: OSError, action: str) -> None:
        translated = session.classify(error, action, parts[index])
        if translated.transient:
            raise translated from error
        errors.append(translated)
        session.discard(None, parts[index])

    # Round trip 1: every exclusive create.
    opens = [session.send_open_excl(part) for part in parts]
    handles: dict[int, bytes] = {}
    retry_alone: list[int] = []
    for index, number in enumerate(opens):
        try:
            handles[index] = session.wait_handle(number)
        except OSError:
            retry_alone.append(index)  # a leftover, most likely: the single-file path copes
    # Round trip 2: writes, fsync and close of every open file.
    sent: dict[int, list[int]] = {}
    for index, handle in handles.items():
        view = memoryview(batch[index][1])
        numbers = [
            session.send_write(handle, offset, view[offset : offset + session.write_size])
            for offset in range(0, len(view), session.write_size)
        ]
        if session.fsync:
            numbers.append(session.send_fsync(handle))
        numbers.append(session.send_close(handle))
        sent[index] = numbers
    ready: list[int] = []
    for index, numbers in sent.items():
        problem: OSError | None = None
        for number in numbers:
            try:
                session.wait_status(number)
            except OSError as error:
                problem = problem or error
        if problem is None:
            ready.append(index)
        else:
            failed(index, problem, "write")
    # Round trip 3: the renames, only for files whose every status was OK (rule 2).
    renames = {index: session.send_rename(parts[index], batch[index][0]) for index in ready}
    results: dict[int, PutResult] = {}
    for index, number in renames.items():
        try:
            session.wait_status(number)
        except OSError as error:
            failed(index, error, "rename")
            continue
        results[index] = PutResult(batch[index][0], len(batch[index][1]))
    for index in retry_alone:
        final, data = batch[index]
        upload = SessionUpload(session, final, len(data))
        try:
            with upload as writer:
                writer.write(data)
        except TransportError as error:
            if error.transient:
                raise
            errors.append(error)
            continue
        assert upload.result is not None
        results[index] = upload.result
    return [results[index] for index in sorted(results)], errors
