"""The STREAM payload: 64 KiB chunks of ChaCha20-Poly1305 (C2SP age.md "Payload").

Rules:

1. The nonce of chunk *i* is the 11-byte big-endian counter *i* followed by 0x01 for the
   final chunk and 0x00 otherwise; it is fixed by the spec, so chunks are independent and a
   batch of them is sealed or opened with one call per chunk and no shared state but the
   counter.
2. The final chunk may be shorter than 64 KiB but is empty only when the whole payload is.
3. Opening follows the reference implementation chunk for chunk, so that the plaintext it
   releases before a failure is exactly what the CCTV vectors expect: a verified chunk is
   released even if what follows it is bad, and a full-size chunk that only opens as final
   is released before "trailing data" is reported.
4. This module works on byte batches; reading, writing and threads belong to the caller.
"""

from __future__ import annotations

from exchange.agefmt import _primitives as prim
from exchange.errors import PayloadError

CHUNK = 64 * 1024
TAG = prim.TAG_SIZE
ENC_CHUNK = CHUNK + TAG
NONCE_SIZE = 16
_MAX_COUNTER = 1 << 88


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    """HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload")."""
    return prim.hkdf_sha256(file_key, nonce, b"payload")


def chunk_nonce(counter: int, last: bool) -> bytes:
    if counter >= _MAX_COUNTER:
        raise PayloadError("age payload: chunk counter overflow")
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def sealed_size(plaintext_size: int) -> int:
    """Payload size (without the 16-byte nonce) for a plaintext of this size."""
    chunks = max(1, -(-plaintext_size // CHUNK))
    return plaintext_size + chunks * TAG


class Sealer:
    """Encrypts a payload batch by batch; every batch but the final one is whole chunks."""

    __slots__ = ("_aead", "_counter", "_done")

    def __init__(self, key: bytes) -> None:
        self._aead = prim.Aead(key)
        self._counter = 0
        self._done = False

    def seal(self, data: bytes | bytearray | memoryview, final: bool) -> bytearray:
        if self._done:
            raise ValueError("the final batch was already sealed")
        size = len(data)
        if not final and (size == 0 or size % CHUNK):
            raise ValueError("a non-final batch must be a positive number of whole chunks")
        if final and size == 0 and self._counter:
            raise ValueError("the final chunk may be empty only if the whole payload is")
        chunks = max(1, -(-size // CHUNK))
        out = bytearray(size + chunks * TAG)
        view = memoryview(data)
        out_view = memoryview(out)
        for i in range(chunks):
            last = final and i == chunks - 1
            piece = view[i * CHUNK : (i + 1) * CHUNK]
            start = i * ENC_CHUNK
            self._aead.seal_into(
                chunk_nonce(self._counter, last), piece, out_view[start : start + len(piece) + TAG]
            )
            self._counter += 1
        self._done = final
        return out


class Opener:
    """Decrypts a payload batch by batch, with the reference implementation's rules."""

    __slots__ = ("_aead", "_counter", "_done")

    def __init__(self, key: bytes) -> None:
        self._aead = prim.Aead(key)
        self._counter = 0
        self._done = False

    def open(
        self, data: bytes | bytearray | memoryview, at_eof: bool
    ) -> tuple[bytearray, PayloadError | None]:
        """Open a batch of whole encrypted chunks (or, at end of input, the rest of the payload).

        Returns the plaintext verified so far and the error that stopped it, if any: the
        caller releases the plaintext and then raises the error.
        """
        if self._done:
            raise ValueError("the final chunk was already opened")
        size = len(data)
        if not at_eof and (size == 0 or size % ENC_CHUNK):
            raise ValueError("a batch before the end must be a positive number of whole chunks")
        view = memoryview(data)
        chunks = -(-size // ENC_CHUNK)
        remainder = size - (chunks - 1) * ENC_CHUNK if chunks else 0
        out = bytearray((chunks - 1) * CHUNK + max(0, remainder - TAG) if chunks else 0)
        out_view = memoryview(out)
        written = 0
        if chunks == 0:
            return out, self._truncated()
        for i in range(chunks):
            piece = view[i * ENC_CHUNK : (i + 1) * ENC_CHUNK]
            at_end = at_eof and i == chunks - 1
            target = out_view[written : written + max(0, len(piece) - TAG)]
            opened, error = self._open_chunk(piece, at_end, target)
            if opened:
                written += len(piece) - TAG
            if error is None and self._done and not at_end:
                error = PayloadError("age payload: data after the final chunk")
            if error is not None:
                return out[:written], error
            if self._done:
                break
        return out, None

    def _open_chunk(
        self, piece: memoryview, at_end: bool, target: memoryview
    ) -> tuple[bool, PayloadError | None]:
        """Open one chunk: (whether its plaintext is verified, the error to report after it)."""
        if len(piece) < ENC_CHUNK:
            # Only the end of the input may hold a short chunk, and it must be the final one.
            if len(piece) < TAG or (len(piece) == TAG and self._counter):
                return False, PayloadError(
                    "age payload: the final chunk is empty or shorter than its tag"
                )
            error = self._try(piece, target, last=True)
            return error is None, error
        if self._try(piece, target, last=False) is None:
            # A verified middle chunk at the end of the input: the final chunk is missing.
            return True, (self._truncated() if at_end else None)
        # A full-size chunk that does not open as a middle chunk may be a full final chunk.
        error = self._try(piece, target, last=True)
        return error is None, error

    def _try(self, piece: memoryview, target: memoryview, *, last: bool) -> PayloadError | None:
        try:
            self._aead.open_into(chunk_nonce(self._counter, last), piece, target)
        except prim.AuthenticationFailed:
            return PayloadError(
                f"age payload: chunk {self._counter} fails authentication (damaged or altered)"
            )
        self._counter += 1
        self._done = last
        return None

    def _truncated(self) -> PayloadError:
        return PayloadError(
            "age payload: the file ends before the final chunk (truncated)",
        )
