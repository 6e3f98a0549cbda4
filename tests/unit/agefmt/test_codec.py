"""encrypt/decrypt: round trips, chunk-boundary sweeps, hashes, fan-out and tampering."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import agefmt
from exchange.agefmt import codec
from exchange.agefmt.stream import CHUNK, ENC_CHUNK
from exchange.errors import HeaderError, NoIdentityMatch, PayloadError, UsageError

IDENTITY = agefmt.generate_x25519_identity()
RECIPIENT = IDENTITY.recipient()
HYBRID = agefmt.generate_hybrid_identity()

#: age stream_test.go's payload lengths and write sizes.
LENGTHS = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 500]
STEPS = [1, 512, CHUNK - 1, CHUNK, CHUNK + 1]


class ShortReads(io.RawIOBase):
    """A reader that returns at most ``step`` bytes per call, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        out = bytes(self._data[:n])
        self._data = self._data[n:]
        return out


class WriteCounter(io.BytesIO):
    """A BytesIO that records the size of every write it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, data: object) -> int:
        self.sizes.append(len(data))  # type: ignore[arg-type]
        return super().write(data)  # type: ignore[arg-type]


def _encrypt(data: bytes, **kwargs: object) -> bytes:
    out = io.BytesIO()
    agefmt.encrypt(io.BytesIO(data), out, [RECIPIENT], **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


def _decrypt(data: bytes, identity: agefmt.Identity = IDENTITY) -> bytes:
    out = io.BytesIO()
    agefmt.decrypt(io.BytesIO(data), out, [identity])
    return out.getvalue()


@pytest.fixture(name="small_batches")
def fixture_small_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One chunk per batch, so that small inputs go through the threaded pipeline."""
    monkeypatch.setattr(codec, "BATCH_CHUNKS", 1)
    yield


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("step", STEPS)
def test_sweep_lengths_and_read_sizes(length: int, step: int) -> None:
    """Every payload length round-trips whatever size the reads of both sides return."""
    data = os.urandom(length)
    encrypted = io.BytesIO()
    result = agefmt.encrypt(ShortReads(data, step), encrypted, [RECIPIENT])  # type: ignore[arg-type]
    out = io.BytesIO()
    back = agefmt.decrypt(ShortReads(encrypted.getvalue(), step), out, [IDENTITY])  # type: ignore[arg-type]
    assert out.getvalue() == data
    assert result.plaintext_sha256 == back.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert result.ciphertext_sha256 == back.ciphertext_sha256
    assert result.ciphertext_sha256 == hashlib.sha256(encrypted.getvalue()).hexdigest()
    assert (result.plaintext_size, result.ciphertext_size) == (length, len(encrypted.getvalue()))


@pytest.mark.parametrize("length", LENGTHS)
def test_payload_layout_matches_the_spec(length: int) -> None:
    """The payload is nonce + ceil(n/64KiB) chunks (at least one), each with a 16-byte tag."""
    encrypted = _encrypt(os.urandom(length))
    header_end = encrypted.index(b"\n--- ") + 1 + 48
    chunks = max(1, -(-length // CHUNK))
    assert len(encrypted) - header_end == 16 + length + 16 * chunks


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3 * CHUNK), step=st.integers(min_value=1, max_value=3 * CHUNK))
def test_round_trip_property(data: bytes, step: int) -> None:
    """decrypt(encrypt(x)) == x for any bytes and read size."""
    encrypted = io.BytesIO()
    agefmt.encrypt(ShortReads(data, step), encrypted, [RECIPIENT])  # type: ignore[arg-type]
    assert _decrypt(encrypted.getvalue()) == data


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize("length", [0, CHUNK, CHUNK + 1, 5 * CHUNK, 7 * CHUNK + 3])
def test_threaded_pipeline_round_trips_and_hashes(length: int) -> None:
    """With one chunk per batch the worker threads run; output and hashes stay in order."""
    data = os.urandom(length)
    encrypted = io.BytesIO()
    result = agefmt.encrypt(io.BytesIO(data), encrypted, [RECIPIENT])
    out = WriteCounter()
    back = agefmt.decrypt(io.BytesIO(encrypted.getvalue()), out, [IDENTITY])
    assert out.getvalue() == data
    assert back.plaintext_sha256 == result.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert back.ciphertext_sha256 == hashlib.sha256(encrypted.getvalue()).hexdigest()
    assert all(size <= CHUNK for size in out.sizes)


def test_multiple_recipients_each_decrypt() -> None:
    """A file for three recipients opens with each of their identities."""
    others = [agefmt.generate_x25519_identity() for _ in range(2)]
    encrypted = io.BytesIO()
    agefmt.encrypt(
        io.BytesIO(b"Thurrock Council"), encrypted, [RECIPIENT, *(o.recipient() for o in others)]
    )
    for identity in [IDENTITY, *others]:
        assert _decrypt(encrypted.getvalue(), identity) == b"Thurrock Council"
    assert encrypted.getvalue().count(b"\n-> X25519 ") == 3


def test_hybrid_round_trip_and_armor() -> None:
    """An mlkem768x25519 file round-trips, binary and armored."""
    for armor in (False, True):
        encrypted = io.BytesIO()
        agefmt.encrypt(io.BytesIO(b"x" * 70000), encrypted, [HYBRID.recipient()], armor=armor)
        assert _decrypt(encrypted.getvalue(), HYBRID) == b"x" * 70000


def test_mixing_post_quantum_and_classical_is_refused() -> None:
    """Encrypting to a hybrid and an X25519 recipient together is refused."""
    with pytest.raises(UsageError, match="post-quantum and classical"):
        agefmt.encrypt(io.BytesIO(b""), io.BytesIO(), [HYBRID.recipient(), RECIPIENT])
    with pytest.raises(UsageError, match="no recipients"):
        agefmt.encrypt(io.BytesIO(b""), io.BytesIO(), [])


def test_fresh_file_key_and_nonce_per_file() -> None:
    """Two encryptions of the same plaintext to the same recipient share no bytes of payload."""
    a, b = _encrypt(b"same"), _encrypt(b"same")
    assert a != b
    assert a[-36:] != b[-36:]


@pytest.mark.parametrize("batch_chunks", [1, 16])
def test_fanout_reads_once_and_matches_single_encrypts(
    monkeypatch: pytest.MonkeyPatch, batch_chunks: int
) -> None:
    """encrypt_fanout gives one valid file per target with the same plaintext hash."""
    monkeypatch.setattr(codec, "BATCH_CHUNKS", batch_chunks)
    data = os.urandom(4 * CHUNK + 11)
    partners = [agefmt.generate_x25519_identity() for _ in range(3)]
    outs = [io.BytesIO() for _ in partners]
    reads: list[int] = []

    class CountingReader(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            reads.append(len(chunk))
            return chunk

    results = agefmt.encrypt_fanout(
        CountingReader(data),
        [([p.recipient()], out) for p, out in zip(partners, outs, strict=True)],
    )
    assert sum(reads) == len(data)
    for partner, out, result in zip(partners, outs, results, strict=True):
        assert _decrypt(out.getvalue(), partner) == data
        assert result.plaintext_sha256 == hashlib.sha256(data).hexdigest()
        assert result.ciphertext_sha256 == hashlib.sha256(out.getvalue()).hexdigest()
    assert len({r.ciphertext_sha256 for r in results}) == 3


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
@pytest.mark.parametrize("limit", [0, 100, 3 * CHUNK])
def test_write_errors_reach_the_caller(limit: int) -> None:
    """An error writing the output (ENOSPC) is raised by encrypt and decrypt, on any thread."""
    data = os.urandom(6 * CHUNK)
    with pytest.raises(OSError, match="No space"):
        agefmt.encrypt(io.BytesIO(data), FailingWriter(limit), [RECIPIENT])
    with pytest.raises(OSError, match="No space"):
        agefmt.decrypt(io.BytesIO(_encrypt(data)), FailingWriter(limit), [IDENTITY])


# --- tampering ------------------------------------------------------------------------------

PLAIN = os.urandom(3 * CHUNK + 100)
SEALED = _encrypt(PLAIN)
HEADER_END = SEALED.index(b"\n--- ") + 1 + 48  # "--- " + 43 base64 + LF
PAYLOAD = HEADER_END + 16


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _other_b64(data: bytes, index: int) -> bytes:
    """Replace one base64 character by another valid one (keeps the header well formed)."""
    replacement = b"B" if data[index : index + 1] != b"B" else b"C"
    return data[:index] + replacement + data[index + 1 :]


TAMPERED: dict[str, tuple[bytes, type[Exception]]] = {
    "version line": (_flip(SEALED, 3), HeaderError),
    "stanza share": (_other_b64(SEALED, SEALED.index(b"X25519 ") + 9), NoIdentityMatch),
    "stanza body": (
        _other_b64(SEALED, SEALED.index(b"\n", SEALED.index(b"X25519")) + 3),
        NoIdentityMatch,
    ),
    "stanza base64": (
        SEALED.replace(b"X25519 ", b"X25519 !", 1),
        HeaderError,
    ),
    # A valid base64 character swapped for another: a flipped bit may leave the alphabet.
    "mac": (_other_b64(SEALED, HEADER_END - 5), agefmt.HeaderMACError),
    "nonce": (_flip(SEALED, HEADER_END + 2), PayloadError),
    "chunk 0": (_flip(SEALED, PAYLOAD + 10), PayloadError),
    "chunk 1": (_flip(SEALED, PAYLOAD + ENC_CHUNK + 10), PayloadError),
    "last chunk": (_flip(SEALED, len(SEALED) - 1), PayloadError),
    "drop last chunk": (SEALED[: PAYLOAD + 3 * ENC_CHUNK], PayloadError),
    "cut mid-chunk": (SEALED[: PAYLOAD + ENC_CHUNK + 500], PayloadError),
    "cut at chunk boundary": (SEALED[: PAYLOAD + 2 * ENC_CHUNK], PayloadError),
    "cut in header": (SEALED[: HEADER_END - 10], HeaderError),
    "cut in nonce": (SEALED[: HEADER_END + 7], HeaderError),
    "appended byte": (SEALED + b"\x00", PayloadError),
    "appended chunk": (SEALED + SEALED[PAYLOAD : PAYLOAD + ENC_CHUNK], PayloadError),
    "swapped chunks": (
        SEALED[:PAYLOAD]
        + SEALED[PAYLOAD + ENC_CHUNK : PAYLOAD + 2 * ENC_CHUNK]
        + SEALED[PAYLOAD : PAYLOAD + ENC_CHUNK]
        + SEALED[PAYLOAD + 2 * ENC_CHUNK :],
        PayloadError,
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampering_is_detected(case: str) -> None:
    """Every kind of damage is refused with the right error class."""
    data, expected = TAMPERED[case]
    with pytest.raises(expected):
        _decrypt(data)


def test_wrong_key_is_no_match_and_releases_nothing() -> None:
    """An identity the file was not encrypted to gets NoIdentityMatch and no plaintext."""
    out = io.BytesIO()
    with pytest.raises(NoIdentityMatch, match="1 recipient stanza"):
        agefmt.decrypt(io.BytesIO(SEALED), out, [agefmt.generate_x25519_identity(), HYBRID])
    assert out.getvalue() == b""


def test_released_plaintext_before_a_damaged_chunk_is_only_verified_chunks() -> None:
    """Damage in chunk 2 releases exactly chunks 0 and 1 (verified) before the error."""
    out = io.BytesIO()
    with pytest.raises(PayloadError, match="chunk 2"):
        agefmt.decrypt(io.BytesIO(_flip(SEALED, PAYLOAD + 2 * ENC_CHUNK + 1)), out, [IDENTITY])
    assert out.getvalue() == PLAIN[: 2 * CHUNK]


@pytest.mark.usefixtures("small_batches")
def test_fanout_write_error_stops_every_worker() -> None:
    """One failing output raises its error and leaves no worker thread behind."""
    before = threading.active_count()
    outs = [io.BytesIO(), FailingWriter(2 * CHUNK), io.BytesIO()]
    with pytest.raises(OSError, match="No space"):
        agefmt.encrypt_fanout(io.BytesIO(os.urandom(8 * CHUNK)), [([RECIPIENT], o) for o in outs])
    assert threading.active_count() == before
