"""Moving bytes for codec: whole-batch reads, and ordered hand-off of blocks to consumers.

Reads: :func:`read_full` and :class:`Source` return whole batches despite short reads (pipes),
:func:`sniff` tells armor from binary. Hand-off: :class:`Fanout` gives each block to its
consumers (a :class:`Digest`, a writer), inline or on one worker thread.

Why a worker thread: SHA-256 (hashlib), ChaCha20-Poly1305 (``cryptography``) and file writes
all release the GIL on large buffers, so the producer (read, seal or open) and the workers
(a hash, a write) run on two cores. Which consumer runs where is the caller's choice
(``codec`` rule 6, from measurements in bench/RESULTS.md).

Rules:

1. Every consumer sees every block, in the order fed, exactly once. Inline consumers run on
   the caller's thread, in order, before the block is handed to the worker; the worker's
   consumers run one after the other.
2. The first block is handled entirely inline; the worker starts only when a second block
   arrives, so small files never start a thread.
3. The queue is bounded (:data:`DEPTH` blocks), so memory stays flat whatever the stream
   length: a fast producer waits for the worker.
4. An inline consumer's exception propagates to the caller at once. A worker consumer's
   exception stops the worker consuming, is kept, and is raised by :meth:`Fanout.close` in the
   caller's thread; :meth:`Fanout.failed` lets the producer stop early.
5. A block handed to a worker must not be modified afterwards (``bytes``, or a ``bytearray``
   the producer does not reuse).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Sequence

Consumer = Callable[[bytes | bytearray], object]
Read = Callable[[int], bytes]
DEPTH = 4
_STOP = None
#: Size of the one-off allocation of :func:`settle_allocator` (see there).
_SETTLE_BYTES = 8 * 1024 * 1024
_settled = False
_SNIFF_LIMIT = 1024
_WHITESPACE = b" \t\r\n"


def settle_allocator() -> None:
    """Stop glibc returning our batch buffers to the kernel after every batch (once per process).

    Batches are 0.5-1 MiB. glibc's malloc serves such blocks with mmap (threshold 128 KiB)
    or, once its dynamic threshold has risen, from the heap, which it trims whenever more
    than twice the threshold is free at the top. Either way each new batch buffer came back
    as fresh pages: measured here 246,000 minor page faults per GiB and about 0.5-1 s of
    system time on top of 0.3 s of cipher time. Freeing one block larger than any batch once
    raises the mmap threshold to that size and the trim threshold to twice it (mallopt(3),
    "dynamic mmap threshold"), after which batch buffers are reused in place (about 2,000
    faults per GiB). Elsewhere than glibc this is one harmless allocation.
    """
    global _settled
    if not _settled:
        # bytes(n) is calloc: an mmap-sized block's pages are never touched, so no faults.
        block = bytes(_SETTLE_BYTES)
        del block
        _settled = True


class _Worker:
    __slots__ = ("_consumers", "_queue", "_thread", "error")

    def __init__(self, consumers: Sequence[Consumer]) -> None:
        self._consumers = consumers
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(maxsize=DEPTH)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="agefmt-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            block = self._queue.get()
            if block is _STOP:
                return
            if self.error is None:
                try:
                    for consumer in self._consumers:
                        consumer(block)
                except BaseException as error:  # noqa: BLE001 - handed to the caller by close()
                    self.error = error

    def put(self, block: bytes | bytearray) -> None:
        self._queue.put(block)

    def join(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()


class Fanout:
    """Feeds blocks to inline consumers and to consumers on a worker; see the module rules."""

    __slots__ = ("_closed", "_fed", "_inline", "_threaded", "_worker")

    def __init__(
        self, consumers: Sequence[Consumer] = (), *, inline: Sequence[Consumer] = ()
    ) -> None:
        """``consumers`` run on the worker (from the second block on), ``inline`` here."""
        self._inline = list(inline)
        self._threaded = list(consumers)
        self._worker: _Worker | None = None
        self._fed = 0
        self._closed = False

    def feed(self, block: bytes | bytearray) -> None:
        """Hand ``block`` to every consumer; the caller must not modify it afterwards."""
        for consumer in self._inline:
            consumer(block)
        if self._fed == 0 or not self._threaded:
            for consumer in self._threaded:
                consumer(block)
        else:
            if self._worker is None:
                self._worker = _Worker(self._threaded)
            self._worker.put(block)
        self._fed += 1

    def failed(self) -> bool:
        return self._worker is not None and self._worker.error is not None

    def close(self, *, raise_errors: bool = True) -> None:
        """Wait until every block is consumed; raise the worker's error, if any."""
        if not self._closed:
            self._closed = True
            if self._worker is not None:
                self._worker.join()
        if raise_errors:
            self.raise_error()

    def raise_error(self) -> None:
        """Raise the worker consumer's error, if it had one (after :meth:`close`)."""
        if self._worker is not None and self._worker.error is not None:
            raise self._worker.error


class Digest:
    """A consumer that counts the blocks it is fed and, if asked to, hashes them."""

    __slots__ = ("_hash", "size")

    def __init__(self, hashing: bool = True) -> None:
        self._hash = hashlib.sha256() if hashing else None
        self.size = 0

    def __call__(self, block: bytes | bytearray) -> None:
        if self._hash is not None:
            self._hash.update(block)
        self.size += len(block)

    def hexdigest(self) -> str | None:
        return None if self._hash is None else self._hash.hexdigest()


def read_full(read: Read, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of input (pipes return short reads)."""
    data = read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class Source:
    """A reader with a small look-back buffer: header lines, then whole payload batches."""

    __slots__ = ("_buf", "_read")

    def __init__(self, read: Read, prefix: bytes = b"") -> None:
        self._read = read
        self._buf = bytearray(prefix)

    def readline(self, limit: int) -> bytes:
        while True:
            end = self._buf.find(b"\n", 0, limit)
            if end >= 0 or len(self._buf) >= limit:
                take = end + 1 if end >= 0 else limit
                line = bytes(self._buf[:take])
                del self._buf[:take]
                return line
            more = self._read(4096)
            if not more:
                line = bytes(self._buf)
                self._buf.clear()
                return line
            self._buf += more

    def read_full(self, size: int) -> bytes:
        if not self._buf:
            return read_full(self._read, size)
        head = bytes(self._buf[:size])
        del self._buf[:size]
        if len(head) == size:
            return head
        return head + read_full(self._read, size - len(head))


def sniff(read: Read) -> tuple[bytes, bool]:
    """Read just enough to tell armor from binary: (bytes read, armored?)."""
    prefix = bytearray()
    while len(prefix) <= _SNIFF_LIMIT:
        byte = read(1)
        if not byte:
            break
        prefix += byte
        if byte not in _WHITESPACE:
            return bytes(prefix), byte == b"-"
    return bytes(prefix), False
