"""encrypt/decrypt with selectable hashes: the hashes asked for are right, the others None.

Every hashing configuration changes which thread runs which consumer, so each is checked
on inputs that stay inline (one batch) and inputs that start the workers (one chunk per
batch), for round trips, errors, tampering and flat memory.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import threading
import tracemalloc
from collections.abc import Iterator

import pytest

from exchange import agefmt
from exchange.agefmt import _pipeline, codec
from exchange.agefmt.stream import CHUNK, ENC_CHUNK
from exchange.errors import PayloadError

IDENTITY = agefmt.generate_x25519_identity()
RECIPIENT = IDENTITY.recipient()
FLAGS = list(itertools.product([True, False], repeat=2))
LENGTHS = [0, 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _expect(asked: bool, data: bytes) -> str | None:
    return _sha(data) if asked else None


@pytest.fixture(name="small_batches", params=[1, 16], ids=["threaded", "inline"])
def fixture_small_batches(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> int:
    """One chunk per batch starts the workers on small inputs; 16 keeps them inline."""
    monkeypatch.setattr(codec, "BATCH_CHUNKS", request.param)
    return int(request.param)


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize(("hash_plaintext", "hash_ciphertext"), FLAGS)
@pytest.mark.parametrize("length", LENGTHS)
def test_encrypt_computes_exactly_the_hashes_asked_for(
    length: int, hash_plaintext: bool, hash_ciphertext: bool
) -> None:
    """encrypt returns hashlib's SHA-256 for each side asked for and None for the others."""
    data = os.urandom(length)
    out = io.BytesIO()
    result = agefmt.encrypt(
        io.BytesIO(data),
        out,
        [RECIPIENT],
        hash_plaintext=hash_plaintext,
        hash_ciphertext=hash_ciphertext,
    )
    sealed = out.getvalue()
    assert result.plaintext_sha256 == _expect(hash_plaintext, data)
    assert result.ciphertext_sha256 == _expect(hash_ciphertext, sealed)
    assert (result.plaintext_size, result.ciphertext_size) == (length, len(sealed))
    back = io.BytesIO()
    agefmt.decrypt(io.BytesIO(sealed), back, [IDENTITY])
    assert back.getvalue() == data


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize(("hash_plaintext", "hash_ciphertext"), FLAGS)
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("armor", [False, True])
def test_decrypt_computes_exactly_the_hashes_asked_for(
    length: int, hash_plaintext: bool, hash_ciphertext: bool, armor: bool
) -> None:
    """decrypt returns hashlib's SHA-256 of the stored file and of the plaintext, or None."""
    data = os.urandom(length)
    sealed = io.BytesIO()
    agefmt.encrypt(io.BytesIO(data), sealed, [RECIPIENT], armor=armor)
    out = io.BytesIO()
    result = agefmt.decrypt(
        io.BytesIO(sealed.getvalue()),
        out,
        [IDENTITY],
        hash_plaintext=hash_plaintext,
        hash_ciphertext=hash_ciphertext,
    )
    assert out.getvalue() == data
    assert result.plaintext_sha256 == _expect(hash_plaintext, data)
    assert result.ciphertext_sha256 == _expect(hash_ciphertext, sealed.getvalue())
    assert (result.plaintext_size, result.ciphertext_size) == (length, len(sealed.getvalue()))


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize(("hash_plaintext", "hash_ciphertext"), FLAGS)
def test_fanout_hashes_each_output_as_asked(hash_plaintext: bool, hash_ciphertext: bool) -> None:
    """encrypt_fanout gives each target its own ciphertext hash (or None) and one plaintext's."""
    data = os.urandom(3 * CHUNK + 5)
    partners = [agefmt.generate_x25519_identity() for _ in range(2)]
    outs = [io.BytesIO() for _ in partners]
    results = agefmt.encrypt_fanout(
        io.BytesIO(data),
        [([p.recipient()], out) for p, out in zip(partners, outs, strict=True)],
        hash_plaintext=hash_plaintext,
        hash_ciphertext=hash_ciphertext,
    )
    for partner, out, result in zip(partners, outs, results, strict=True):
        assert result.plaintext_sha256 == _expect(hash_plaintext, data)
        assert result.ciphertext_sha256 == _expect(hash_ciphertext, out.getvalue())
        back = io.BytesIO()
        agefmt.decrypt(io.BytesIO(out.getvalue()), back, [partner])
        assert back.getvalue() == data


def test_defaults_compute_both_hashes() -> None:
    """Callers that pass no flags still get both hashes, as before the flags existed."""
    data = b"Essex County Council referral extract"
    out = io.BytesIO()
    enc = agefmt.encrypt(io.BytesIO(data), out, [RECIPIENT])
    dec = agefmt.decrypt(io.BytesIO(out.getvalue()), io.BytesIO(), [IDENTITY])
    assert enc.plaintext_sha256 == dec.plaintext_sha256 == _sha(data)
    assert enc.ciphertext_sha256 == dec.ciphertext_sha256 == _sha(out.getvalue())


class FailingWriter(io.BytesIO):
    """A destination that fails after ``limit`` bytes, like a full disk."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def write(self, data: object) -> int:
        if self.tell() + len(data) > self._limit:  # type: ignore[arg-type]
            raise OSError(28, "No space left on device")
        return super().write(data)  # type: ignore[arg-type]


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize(("hash_plaintext", "hash_ciphertext"), FLAGS)
@pytest.mark.parametrize("limit", [0, 3 * CHUNK])
def test_write_errors_reach_the_caller_in_every_configuration(
    limit: int, hash_plaintext: bool, hash_ciphertext: bool
) -> None:
    """ENOSPC while writing is raised whatever thread writes, and no worker is left behind."""
    before = threading.active_count()
    data = os.urandom(6 * CHUNK)
    sealed = io.BytesIO()
    agefmt.encrypt(io.BytesIO(data), sealed, [RECIPIENT])
    flags = {"hash_plaintext": hash_plaintext, "hash_ciphertext": hash_ciphertext}
    with pytest.raises(OSError, match="No space"):
        agefmt.encrypt(io.BytesIO(data), FailingWriter(limit), [RECIPIENT], **flags)
    with pytest.raises(OSError, match="No space"):
        agefmt.decrypt(io.BytesIO(sealed.getvalue()), FailingWriter(limit), [IDENTITY], **flags)
    assert threading.active_count() == before


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize(("hash_plaintext", "hash_ciphertext"), FLAGS)
def test_damaged_chunk_releases_only_verified_chunks_without_hashes(
    hash_plaintext: bool, hash_ciphertext: bool
) -> None:
    """A damaged chunk 2 is refused and only chunks 0 and 1 are released, hashed or not."""
    data = os.urandom(4 * CHUNK)
    buffer = io.BytesIO()
    agefmt.encrypt(io.BytesIO(data), buffer, [RECIPIENT])
    sealed = bytearray(buffer.getvalue())
    payload = sealed.index(b"\n--- ") + 1 + 48 + 16
    sealed[payload + 2 * ENC_CHUNK + 1] ^= 0x01
    out = io.BytesIO()
    with pytest.raises(PayloadError, match="chunk 2"):
        agefmt.decrypt(
            io.BytesIO(bytes(sealed)),
            out,
            [IDENTITY],
            hash_plaintext=hash_plaintext,
            hash_ciphertext=hash_ciphertext,
        )
    assert out.getvalue() == data[: 2 * CHUNK]


class Zeros(io.RawIOBase):
    """``size`` bytes of input made up on demand, so the test holds no copy of its own."""

    def __init__(self, size: int) -> None:
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._left if size < 0 else min(size, self._left)
        self._left -= n
        return bytes(n)


class Sink(io.RawIOBase):
    """Counts what it is given and keeps none of it."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        self.size += len(data)  # type: ignore[arg-type]
        return len(data)  # type: ignore[arg-type]


def _peak_encrypt_mib(size: int, **flags: bool) -> float:
    sink = Sink()
    _pipeline.settle_allocator()  # its one-off block is not the pipeline's memory
    tracemalloc.start()
    try:
        agefmt.encrypt(Zeros(size), sink, [RECIPIENT], **flags)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size > size
    return peak / 2**20


@pytest.fixture(name="untraced")
def fixture_untraced() -> Iterator[None]:
    """tracemalloc must not already run (another plugin), or the peaks would include it."""
    assert not tracemalloc.is_tracing()
    yield


@pytest.mark.usefixtures("untraced")
@pytest.mark.parametrize(("hash_plaintext", "hash_ciphertext"), FLAGS)
def test_memory_stays_flat_whatever_the_size(hash_plaintext: bool, hash_ciphertext: bool) -> None:
    """Peak Python allocation is bounded by a few batches per worker, for 16 or 96 MiB alike."""
    flags = {"hash_plaintext": hash_plaintext, "hash_ciphertext": hash_ciphertext}
    small = _peak_encrypt_mib(16 * 2**20, **flags)
    large = _peak_encrypt_mib(96 * 2**20, **flags)
    # Two workers with DEPTH batches queued and one in hand each; on this thread the batch
    # being sealed, the one read ahead and the sealed output.
    bound = (2 * (_pipeline.DEPTH + 1) + 3) * codec.BATCH_CHUNKS * ENC_CHUNK / 2**20
    assert small <= bound
    assert large <= bound


def test_settle_allocator_runs_once_and_is_harmless() -> None:
    """The allocator settling is a latch: calling it again does nothing and returns."""
    _pipeline.settle_allocator()
    _pipeline.settle_allocator()
    assert _pipeline._settled


class ThreadRecorder(io.BytesIO):
    """Records the threads that write to it and how many threads were alive meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[str] = set()
        self.alive = 0

    def write(self, data: object) -> int:
        self.writers.add(threading.current_thread().name)
        self.alive = max(self.alive, threading.active_count())
        return super().write(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(("hash_plaintext", "hash_ciphertext"), FLAGS)
def test_writes_stay_on_the_callers_thread_and_workers_only_hash(
    monkeypatch: pytest.MonkeyPatch, hash_plaintext: bool, hash_ciphertext: bool
) -> None:
    """The caller's thread writes; one worker per hash asked for, none when none is asked."""
    monkeypatch.setattr(codec, "BATCH_CHUNKS", 1)
    before = threading.active_count()
    flags = {"hash_plaintext": hash_plaintext, "hash_ciphertext": hash_ciphertext}
    data = os.urandom(6 * CHUNK)
    sealed = ThreadRecorder()
    agefmt.encrypt(io.BytesIO(data), sealed, [RECIPIENT], **flags)
    plain = ThreadRecorder()
    agefmt.decrypt(io.BytesIO(sealed.getvalue()), plain, [IDENTITY], **flags)
    assert plain.getvalue() == data
    caller = threading.current_thread().name
    assert sealed.writers == plain.writers == {caller}
    workers = int(hash_plaintext) + int(hash_ciphertext)
    assert sealed.alive - before == plain.alive - before == workers
    assert threading.active_count() == before


@pytest.mark.parametrize(("hash_plaintext", "hash_ciphertext"), FLAGS)
def test_a_file_of_one_batch_starts_no_thread(hash_plaintext: bool, hash_ciphertext: bool) -> None:
    """A manifest-sized file is encrypted and decrypted without starting any worker."""
    before = threading.active_count()
    flags = {"hash_plaintext": hash_plaintext, "hash_ciphertext": hash_ciphertext}
    data = os.urandom(3 * CHUNK + 9)
    sealed = ThreadRecorder()
    result = agefmt.encrypt(io.BytesIO(data), sealed, [RECIPIENT], **flags)
    plain = ThreadRecorder()
    back = agefmt.decrypt(io.BytesIO(sealed.getvalue()), plain, [IDENTITY], **flags)
    assert plain.getvalue() == data
    assert sealed.alive == plain.alive == before
    assert (
        result.ciphertext_sha256
        == back.ciphertext_sha256
        == _expect(hash_ciphertext, sealed.getvalue())
    )
    assert result.plaintext_sha256 == back.plaintext_sha256 == _expect(hash_plaintext, data)
