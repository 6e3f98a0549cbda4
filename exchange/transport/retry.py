"""Retrying a transport: the backoff policy lives here and nowhere else.

Rules:

1. Only errors with ``transient = True`` are retried; a permanent error is re-raised at once,
   because retrying a host-key mismatch or a full disk only hides it from ops.
2. The delay before attempt ``n`` (``n >= 1``) is "full jitter": uniform in
   ``[0, min(cap, base * factor ** (n - 1))]``, so a fleet of daemons does not hammer a hub
   that comes back. Randomness and sleeping are injected, so tests run without sleeping.
3. After a transient error the inner transport is closed, so the next attempt reconnects
   instead of reusing a connection that is known to be broken.
4. An operation is retried only if it can be replayed: uploads need a seekable source and
   downloads a seekable, truncatable destination. ``open_atomic`` is not retried (the caller's
   block cannot be replayed by us); use :meth:`RetryingTransport.call` around the whole block.
"""

from __future__ import annotations

import builtins
import random as _random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from exchange.errors import TransportError
from exchange.transport.port import (
    DEFAULT_MAX_ENTRIES,
    AtomicUpload,
    Listing,
    NameValidator,
    PutResult,
    Transport,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, capped; ``attempts`` counts the first try."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    attempts: int = 6

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.cap < 0 or self.attempts < 1:
            raise ValueError(f"invalid backoff policy {self!r}")

    def ceiling(self, retry: int) -> float:
        """The largest delay before retry number ``retry`` (1-based)."""
        # min() before the power would overflow for large retry numbers on a float.
        exponent = min(retry - 1, 64)
        return float(min(self.cap, self.base * self.factor**exponent))

    def delay(self, retry: int, unit_random: float) -> float:
        """The delay before retry ``retry`` given a uniform random number in ``[0, 1)``."""
        return self.ceiling(retry) * unit_random


class RetryingTransport:
    """Wraps a transport and retries transient failures under one :class:`Backoff`."""

    def __init__(
        self,
        inner: Transport,
        policy: Backoff | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        unit_random: Callable[[], float] = _random.random,
        on_retry: Callable[[int, float, TransportError], None] | None = None,
    ) -> None:
        self.inner = inner
        self.policy = policy if policy is not None else Backoff()
        self._sleep = sleep
        self._random = unit_random
        self._on_retry = on_retry

    def call(
        self, operation: Callable[[Transport], T], *, reset: Callable[[], object] | None = None
    ) -> T:
        """Run ``operation(inner)``, retrying transient errors; ``reset`` runs before each retry."""
        retry = 0
        while True:
            try:
                return operation(self.inner)
            except TransportError as error:
                retry += 1
                if not error.transient or retry >= self.policy.attempts:
                    raise
                self.inner.close()
                delay = self.policy.delay(retry, self._random())
                if self._on_retry is not None:
                    self._on_retry(retry, delay, error)
                self._sleep(delay)
                if reset is not None:
                    reset()

    def open_atomic(self, remote_final: str, *, expected_size: int | None = None) -> AtomicUpload:
        return self.inner.open_atomic(remote_final, expected_size=expected_size)

    def put_atomic(
        self, src: BinaryIO, remote_final: str, *, expected_size: int | None = None
    ) -> PutResult:
        start = src.tell()
        return self.call(
            lambda t: t.put_atomic(src, remote_final, expected_size=expected_size),
            reset=lambda: src.seek(start),
        )

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> builtins.list[PutResult]:
        return self.call(lambda t: t.put_many(items))

    def list(
        self,
        remote_dir: str,
        *,
        validate: NameValidator | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> Listing:
        return self.call(lambda t: t.list(remote_dir, validate=validate, max_entries=max_entries))

    def get(self, remote: str, dst: BinaryIO, *, max_size: int) -> int:
        start = dst.tell()

        def rewind() -> None:
            dst.seek(start)
            dst.truncate()

        return self.call(lambda t: t.get(remote, dst, max_size=max_size), reset=rewind)

    def remove(self, remote: str) -> bool:
        return self.call(lambda t: t.remove(remote))

    def close(self) -> None:
        self.inner.close()
