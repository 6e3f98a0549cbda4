"""Ordered hand-off of byte blocks to consumers (a hash, a writer), inline or on one worker.

Why a worker thread: SHA-256 (hashlib), ChaCha20-Poly1305 (``cryptography``) and file writes
all release the GIL on large buffers, so the producer (read, seal or open) and a worker (a
hash) run on two cores. Which consumer runs where is the caller's choice, made per hashing
configuration from measurements (bench/RESULTS.md): the aim is two halves of about equal
cost when there is a hash to move off the producer, and no thread at all when there is not.

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

import queue
import threading
from collections.abc import Callable, Sequence

Consumer = Callable[[bytes | bytearray], object]
DEPTH = 4
_STOP = None
#: Size of the one-off allocation of :func:`settle_allocator` (see there).
_SETTLE_BYTES = 8 * 1024 * 1024
_settled = False


def settle_allocator() -> None:
    """Stop glibc returning our batch buffers to the kernel after every batch (once per process).

    Batches are about 1 MiB. glibc's malloc serves such blocks with mmap (threshold 128 KiB)
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
