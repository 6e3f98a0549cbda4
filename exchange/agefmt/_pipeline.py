"""Ordered fan-out of byte blocks to consumers (hashes, writers), on threads for long streams.

Why threads: SHA-256 (hashlib), ChaCha20-Poly1305 (``cryptography``) and file writes all
release the GIL on large buffers, so hashing the plaintext, hashing the ciphertext, writing
it and encrypting the next batch can run on different cores. Measured in bench/crypto.

Rules:

1. Each consumer sees every block, in the order fed, exactly once.
2. The first block is handled inline; worker threads start only when a second block arrives,
   so small files never start a thread.
3. Queues are bounded (:data:`DEPTH` blocks per consumer), so memory stays flat whatever the
   stream length: a fast reader waits for the slowest consumer.
4. A consumer's exception stops that consumer, is kept, and is raised by :meth:`Fanout.close`
   in the caller's thread; :meth:`Fanout.failed` lets the producer stop early.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

Consumer = Callable[[bytes | bytearray], object]
DEPTH = 4
_STOP = None


class _Worker:
    __slots__ = ("_consumer", "_queue", "_thread", "error")

    def __init__(self, consumer: Consumer, name: str) -> None:
        self._consumer = consumer
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(maxsize=DEPTH)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            block = self._queue.get()
            if block is _STOP:
                return
            if self.error is None:
                try:
                    self._consumer(block)
                except BaseException as error:  # noqa: BLE001 - handed to the caller by close()
                    self.error = error

    def put(self, block: bytes | bytearray) -> None:
        self._queue.put(block)

    def join(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()


class Fanout:
    """Feeds blocks to consumers; see the module rules."""

    __slots__ = ("_closed", "_consumers", "_fed", "_workers")

    def __init__(self, consumers: Sequence[Consumer]) -> None:
        self._consumers = list(consumers)
        self._workers: list[_Worker] = []
        self._fed = 0
        self._closed = False

    def feed(self, block: bytes | bytearray) -> None:
        """Hand ``block`` to every consumer; the caller must not modify it afterwards."""
        if self._fed == 0:
            for consumer in self._consumers:
                consumer(block)
        else:
            if not self._workers:
                self._workers = [
                    _Worker(c, f"agefmt-consumer-{i}") for i, c in enumerate(self._consumers)
                ]
            for worker in self._workers:
                worker.put(block)
        self._fed += 1

    def failed(self) -> bool:
        return any(w.error is not None for w in self._workers)

    def close(self, *, raise_errors: bool = True) -> None:
        """Wait until every block is consumed; raise the first consumer error, if any."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            worker.join()
        if raise_errors:
            for worker in self._workers:
                if worker.error is not None:
                    raise worker.error
