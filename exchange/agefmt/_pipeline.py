"""Ordered hand-off of byte blocks to consumers (a hash, a writer) on one worker thread.

Why a thread: SHA-256 (hashlib), ChaCha20-Poly1305 (``cryptography``) and file writes all
release the GIL on large buffers, so the producer (read, hash one side, encrypt or decrypt)
and the consumer (hash the other side, write) run on two cores. One worker per output,
rather than one per consumer, measured fastest on two cores (bench/RESULTS.md): the two
halves then cost about the same and there are fewer GIL hand-offs.

Rules:

1. The consumers see every block, in the order fed, exactly once, one after the other.
2. The first block is handled inline; the worker starts only when a second block arrives,
   so small files never start a thread.
3. The queue is bounded (:data:`DEPTH` blocks), so memory stays flat whatever the stream
   length: a fast producer waits for the consumer.
4. A consumer's exception stops the worker consuming, is kept, and is raised by
   :meth:`Fanout.close` in the caller's thread; :meth:`Fanout.failed` lets the producer stop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

Consumer = Callable[[bytes | bytearray], object]
DEPTH = 4
_STOP = None


class _Worker:
    __slots__ = ("_consumers", "_queue", "_thread", "error")

    def __init__(self, consumers: Sequence[Consumer]) -> None:
        self._consumers = consumers
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(maxsize=DEPTH)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="agefmt-output", daemon=True)
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
    """Feeds blocks to consumers; see the module rules."""

    __slots__ = ("_closed", "_consumers", "_fed", "_worker")

    def __init__(self, consumers: Sequence[Consumer]) -> None:
        self._consumers = list(consumers)
        self._worker: _Worker | None = None
        self._fed = 0
        self._closed = False

    def feed(self, block: bytes | bytearray) -> None:
        """Hand ``block`` to every consumer; the caller must not modify it afterwards."""
        if self._fed == 0 or not self._consumers:
            for consumer in self._consumers:
                consumer(block)
        else:
            if self._worker is None:
                self._worker = _Worker(self._consumers)
            self._worker.put(block)
        self._fed += 1

    def failed(self) -> bool:
        return self._worker is not None and self._worker.error is not None

    def close(self, *, raise_errors: bool = True) -> None:
        """Wait until every block is consumed; raise the consumer error, if any."""
        if not self._closed:
            self._closed = True
            if self._worker is not None:
                self._worker.join()
        if raise_errors:
            self.raise_error()

    def raise_error(self) -> None:
        """Raise the consumer's error, if it had one (after :meth:`close`)."""
        if self._worker is not None and self._worker.error is not None:
            raise self._worker.error
