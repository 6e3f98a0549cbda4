"""RetryingTransport and Backoff: the retry policy, tested without sleeping."""

from __future__ import annotations

import io

import pytest

from exchange.errors import HostKeyError, TransientTransportError
from exchange.transport.memory import MemoryFaults, MemoryHub, MemoryTransport
from exchange.transport.retry import Backoff, RetryingTransport

FINAL = "southend-uhft/inbox/0123456789abcdef0123456789abcdef.age"


def _transport(faults: MemoryFaults) -> tuple[MemoryHub, MemoryTransport]:
    hub = MemoryHub()
    hub.mkdirs("southend-uhft/inbox")
    return hub, MemoryTransport(hub, faults)


class TestBackoff:
    """Exponential growth, full jitter, a cap."""

    def test_ceiling_grows_then_caps(self) -> None:
        """The ceiling doubles per retry and stops at the cap."""
        policy = Backoff(base=1, factor=2, cap=10)

        assert [policy.ceiling(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]

    def test_delay_is_jittered_within_ceiling(self) -> None:
        """The delay is the ceiling scaled by the random number in [0, 1)."""
        policy = Backoff(base=2, cap=60)

        assert (policy.delay(3, 0.0), policy.delay(3, 0.5)) == (0.0, 4.0)

    def test_huge_retry_numbers_do_not_overflow(self) -> None:
        """A long outage does not overflow the exponent."""
        assert Backoff(cap=60).ceiling(10_000) == 60

    @pytest.mark.parametrize("kwargs", [{"base": -1}, {"factor": 0.5}, {"attempts": 0}])
    def test_invalid_policies_are_refused(self, kwargs: dict[str, float]) -> None:
        """Negative delays, shrinking factors and zero attempts are refused."""
        with pytest.raises(ValueError, match="invalid backoff"):
            Backoff(**kwargs)  # type: ignore[arg-type]


class TestRetrying:
    """Transient errors are retried with the policy's delays; permanent ones are not."""

    def test_transient_errors_are_retried_with_backoff(self) -> None:
        """A hub down for two connects costs two sleeps of the jittered delays, then works."""
        _hub, inner = _transport(MemoryFaults(refuse_connects=2))
        sleeps: list[float] = []
        retrying = RetryingTransport(
            inner, Backoff(base=1, cap=60), sleep=sleeps.append, unit_random=lambda: 0.5
        )

        result = retrying.put_atomic(io.BytesIO(b"data"), FINAL)

        assert sleeps == [0.5, 1.0]
        assert result.size == 4

    def test_upload_source_is_rewound_between_attempts(self) -> None:
        """After a cut, the retry sends the whole source again, not its remainder."""
        hub, inner = _transport(MemoryFaults(cut_after_bytes=3))
        retrying = RetryingTransport(inner, sleep=lambda _s: None)
        src = io.BytesIO(b"xxheader-and-body")
        src.seek(2)

        retrying.put_atomic(src, FINAL)

        assert hub.files[FINAL] == b"header-and-body"

    def test_gives_up_after_the_attempts(self) -> None:
        """The last transient error is raised when attempts run out."""
        _hub, inner = _transport(MemoryFaults(refuse_connects=10))
        sleeps: list[float] = []
        retrying = RetryingTransport(inner, Backoff(attempts=3), sleep=sleeps.append)

        with pytest.raises(TransientTransportError):
            retrying.list("southend-uhft/inbox")
        assert len(sleeps) == 2

    def test_permanent_errors_are_not_retried(self) -> None:
        """A host key error is raised at once, with no sleep."""
        sleeps: list[float] = []

        def refuse(_transport: object) -> None:
            raise HostKeyError("hub h:22: host key is not pinned")

        _hub, inner = _transport(MemoryFaults())
        retrying = RetryingTransport(inner, sleep=sleeps.append)

        with pytest.raises(HostKeyError):
            retrying.call(refuse)
        assert sleeps == []

    def test_download_destination_is_reset_between_attempts(self) -> None:
        """A retried download does not leave bytes of the failed attempt in front."""
        hub, inner = _transport(MemoryFaults(refuse_connects=1))
        hub.files[FINAL] = b"ciphertext"
        out = io.BytesIO()
        out.write(b"stale bytes, longer than the file itself")
        out.seek(0)

        RetryingTransport(inner, sleep=lambda _s: None).get(FINAL, out, max_size=100)

        assert out.getvalue() == b"ciphertext"
