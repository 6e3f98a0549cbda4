"""Whole age files: encrypt and decrypt streams, hashing either side in the same pass.

Rules:

1. Memory is flat: data moves in batches of :data:`BATCH_CHUNKS` chunks, and at most a few
   batches are in flight (see ``_pipeline``), whatever the file size.
2. Every result carries the plaintext and the ciphertext size, and the SHA-256 (lower-case
   hex) of each side the caller asked for (``hash_plaintext``, ``hash_ciphertext``; both by
   default); a hash not asked for is ``None``, never computed. "Ciphertext" is the age file
   exactly as stored: the armored text when armored.
3. Decryption writes each chunk to ``dst`` only after it verified. On failure, what was
   released stays released (a stream cannot take it back, and the CCTV vectors pin it);
   keeping it from the final file name is the caller's job (``exchange.fsutil.atomic_write``).
4. Order of checks on decryption, as in the reference implementation: header grammar, then
   the identities (a malformed stanza of theirs is a header error), then the header MAC,
   then the payload nonce, then the payload.
5. A file is never encrypted to post-quantum and classical recipients together: the
   classical stanza would let a future quantum computer recover the file key.
6. Threads: the caller's thread reads, seals or opens, and writes; each hash asked for runs
   on a worker of its own (per output for a fan-out's ciphertexts). One hash (~0.6 s/GiB)
   then weighs about what read + cipher + write weigh, both hashes make three similar parts
   on two cores, and no hash means no thread. Measurements: bench/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Generic, Literal, TypeVar, overload

from exchange.agefmt import _pipeline as pipe
from exchange.agefmt import _primitives as prim
from exchange.agefmt import header as hdr
from exchange.agefmt.armor import ArmorReader, ArmorWriter
from exchange.agefmt.keys import Identity, Recipient
from exchange.agefmt.stream import CHUNK, ENC_CHUNK, NONCE_SIZE, Opener, Sealer, payload_key
from exchange.errors import HeaderError, NoIdentityMatch, UsageError

FILE_KEY_SIZE = 16
#: Chunks per batch (512 KiB): amortises per-call overhead; 1 MiB batches measured slower
#: when decrypting on a loaded machine (bench/RESULTS.md).
BATCH_CHUNKS = 8


#: The type of a result's plaintext hash: ``str`` when it was asked for, else ``None``.
P = TypeVar("P", bound="str | None", covariant=True)
#: The type of a result's ciphertext hash: ``str`` when it was asked for, else ``None``.
C = TypeVar("C", bound="str | None", covariant=True)


@dataclass(frozen=True, slots=True)
class EncryptResult(Generic[P, C]):
    """Sizes and hashes of one encryption; a hash not asked for is ``None``.

    The type parameters say which hashes are present, so callers that keep the defaults
    (``EncryptResult[str, str]``) need no ``None`` checks.
    """

    plaintext_size: int
    plaintext_sha256: P
    ciphertext_size: int
    ciphertext_sha256: C


@dataclass(frozen=True, slots=True)
class DecryptResult(Generic[P, C]):
    """Sizes and hashes of one decryption; a hash not asked for is ``None``.

    ``ciphertext_sha256`` covers the file as read (the armored text when armored).
    """

    plaintext_size: int
    plaintext_sha256: P
    ciphertext_size: int
    ciphertext_sha256: C


def _fanout(
    consumers: list[pipe.Consumer], *, threaded: bool, inline: Sequence[pipe.Consumer] = ()
) -> pipe.Fanout:
    """``consumers`` on a worker if they hash (``threaded``), else here; ``inline`` here.

    Blocks handed to a worker are never modified afterwards: read blocks are ``bytes`` and
    each sealed or opened batch is a new ``bytearray``.
    """
    if threaded:
        return pipe.Fanout(consumers, inline=inline)
    return pipe.Fanout(inline=[*inline, *consumers])


def _check_recipients(recipients: Sequence[Recipient]) -> None:
    if not recipients:
        raise UsageError("no recipients given", hint="pass at least one recipient (-r age1…)")
    kinds = {r.kind for r in recipients}
    if "mlkem768x25519" in kinds and len(kinds) > 1:
        raise UsageError(
            "refusing to encrypt to post-quantum and classical recipients together",
            hint="a classical recipient would let a future quantum computer read the file; "
            "use only age1pq1… recipients or only age1… ones",
        )


class _Target:
    """One output file of a fan-out: its header, its STREAM sealer and its consumers."""

    def __init__(
        self,
        recipients: Sequence[Recipient],
        dst: BinaryIO,
        *,
        armor: bool,
        hash_ciphertext: bool,
    ) -> None:
        _check_recipients(recipients)
        file_key = prim.random_bytes(FILE_KEY_SIZE)
        stanzas = [stanza for r in recipients for stanza in r.wrap(file_key)]
        nonce = prim.random_bytes(NONCE_SIZE)
        self.intro = hdr.encode_header(file_key, stanzas) + nonce
        self.sealer = Sealer(payload_key(file_key, nonce))
        self.digest = pipe.Digest(hash_ciphertext)
        self.armor: ArmorWriter | None = None
        if armor:
            digest, write = self.digest, dst.write

            def write_armored(block: bytes) -> None:
                digest(block)
                write(block)

            # The armor writer keeps line state, so it and the hash it feeds stay together.
            self.armor = ArmorWriter(write_armored)
            self.fanout = _fanout([self.armor.write], threaded=hash_ciphertext)
        else:
            self.fanout = _fanout([self.digest], threaded=hash_ciphertext, inline=[dst.write])

    def finish_armor(self) -> None:
        """Write the armor's last line and END line, once every block is consumed."""
        if self.armor is not None:
            self.armor.close()


def encrypt_fanout(
    src: BinaryIO,
    targets: Sequence[tuple[Sequence[Recipient], BinaryIO]],
    *,
    armor: bool = False,
    hash_plaintext: bool = True,
    hash_ciphertext: bool = True,
) -> tuple[EncryptResult[str | None, str | None], ...]:
    """Encrypt ``src`` once per target, reading (and, if asked, hashing) the plaintext once.

    ``hash_plaintext`` / ``hash_ciphertext`` choose which SHA-256 are computed; the others
    are ``None`` in the results. A delivery of a file whose plaintext hash was recorded at
    intake needs only the ciphertext hash.
    """
    if not targets:
        raise UsageError("no output targets given")
    outputs = [
        _Target(recipients, dst, armor=armor, hash_ciphertext=hash_ciphertext)
        for recipients, dst in targets
    ]
    plain = pipe.Digest(hash_plaintext)
    # Read blocks are bytes, never reused, so the plaintext hash can run on its own worker.
    plain_fanout = _fanout([plain], threaded=hash_plaintext)
    fanouts = [plain_fanout, *(t.fanout for t in outputs)]
    batch = BATCH_CHUNKS * CHUNK
    pipe.settle_allocator()
    try:
        pending = pipe.read_full(src.read, batch)
        first = True
        while True:
            following = pipe.read_full(src.read, batch) if len(pending) == batch else b""
            final = not following
            plain_fanout.feed(pending)
            for target in outputs:
                sealed = target.sealer.seal(pending, final)
                # The header goes with the first batch: a one-batch file starts no thread.
                target.fanout.feed(target.intro + sealed if first else sealed)
            if final or any(f.failed() for f in fanouts):
                break
            pending, first = following, False
    finally:
        # Every worker is stopped before anything is raised, so none is left waiting.
        for fanout in fanouts:
            fanout.close(raise_errors=False)
    for fanout in fanouts:
        fanout.raise_error()
    for target in outputs:
        target.finish_armor()
    return tuple(
        EncryptResult(plain.size, plain.hexdigest(), t.digest.size, t.digest.hexdigest())
        for t in outputs
    )


@overload
def encrypt(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Sequence[Recipient],
    *,
    armor: bool = ...,
    hash_plaintext: Literal[True] = ...,
    hash_ciphertext: Literal[True] = ...,
) -> EncryptResult[str, str]: ...
@overload
def encrypt(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Sequence[Recipient],
    *,
    armor: bool = ...,
    hash_plaintext: Literal[False],
    hash_ciphertext: Literal[True] = ...,
) -> EncryptResult[None, str]: ...
@overload
def encrypt(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Sequence[Recipient],
    *,
    armor: bool = ...,
    hash_plaintext: Literal[True] = ...,
    hash_ciphertext: Literal[False],
) -> EncryptResult[str, None]: ...
@overload
def encrypt(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Sequence[Recipient],
    *,
    armor: bool = ...,
    hash_plaintext: Literal[False],
    hash_ciphertext: Literal[False],
) -> EncryptResult[None, None]: ...
@overload
def encrypt(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Sequence[Recipient],
    *,
    armor: bool = ...,
    hash_plaintext: bool = ...,
    hash_ciphertext: bool = ...,
) -> EncryptResult[str | None, str | None]: ...
def encrypt(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Sequence[Recipient],
    *,
    armor: bool = False,
    hash_plaintext: bool = True,
    hash_ciphertext: bool = True,
) -> EncryptResult[str | None, str | None]:
    """Encrypt ``src`` to ``recipients`` as one age file written to ``dst``.

    The result has the SHA-256 of each side asked for and ``None`` for the others.
    """
    (result,) = encrypt_fanout(
        src,
        [(recipients, dst)],
        armor=armor,
        hash_plaintext=hash_plaintext,
        hash_ciphertext=hash_ciphertext,
    )
    return result


def _unwrap(stanzas: Sequence[hdr.Stanza], identities: Sequence[Identity]) -> bytes:
    if len(stanzas) > 1 and any(s.args[0] == "scrypt" for s in stanzas):
        raise HeaderError("age header: an scrypt stanza must be the only stanza")
    for identity in identities:
        file_key = identity.unwrap(stanzas)
        if file_key is not None:
            return file_key
    types = ", ".join(sorted({s.args[0] for s in stanzas}))
    raise NoIdentityMatch(
        f"no identity matched any of the file's {len(stanzas)} recipient stanza(s) (types: {types})"
    )


def _already_hashed(_block: bytes | bytearray) -> None:
    """Armored input is hashed as it is read (the text is the stored file), not here."""


@overload
def decrypt(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[Identity],
    *,
    armored: bool | None = ...,
    hash_plaintext: Literal[True] = ...,
    hash_ciphertext: Literal[True] = ...,
) -> DecryptResult[str, str]: ...
@overload
def decrypt(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[Identity],
    *,
    armored: bool | None = ...,
    hash_plaintext: Literal[False],
    hash_ciphertext: Literal[True] = ...,
) -> DecryptResult[None, str]: ...
@overload
def decrypt(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[Identity],
    *,
    armored: bool | None = ...,
    hash_plaintext: Literal[True] = ...,
    hash_ciphertext: Literal[False],
) -> DecryptResult[str, None]: ...
@overload
def decrypt(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[Identity],
    *,
    armored: bool | None = ...,
    hash_plaintext: Literal[False],
    hash_ciphertext: Literal[False],
) -> DecryptResult[None, None]: ...
@overload
def decrypt(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[Identity],
    *,
    armored: bool | None = ...,
    hash_plaintext: bool = ...,
    hash_ciphertext: bool = ...,
) -> DecryptResult[str | None, str | None]: ...
def decrypt(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[Identity],
    *,
    armored: bool | None = None,
    hash_plaintext: bool = True,
    hash_ciphertext: bool = True,
) -> DecryptResult[str | None, str | None]:
    """Decrypt the age file in ``src`` to ``dst``.

    ``armored=None`` detects armor: the file is armored if its first byte that is not
    whitespace is ``-``. True or False forces one reading. ``hash_plaintext`` /
    ``hash_ciphertext`` choose which SHA-256 are computed; the others are ``None`` in the
    result (``exchange decrypt`` needs none; a verifier that hashed the file while it
    fetched it needs only the plaintext one).
    """
    cipher = pipe.Digest(hash_ciphertext)
    prefix, detected = pipe.sniff(src.read)
    armored = detected if armored is None else armored
    if armored:

        def hashing_read(size: int) -> bytes:
            data = src.read(size)
            cipher(data)
            return data

        cipher(prefix)
        source = pipe.Source(ArmorReader(hashing_read, prefix).read)
        cipher_fanout = pipe.Fanout(inline=[_already_hashed])
    else:
        source = pipe.Source(src.read, prefix)
        cipher_fanout = _fanout([cipher], threaded=hash_ciphertext)
    header, covered = hdr.parse(source.readline)
    file_key = _unwrap(header.stanzas, identities)
    hdr.verify_mac(file_key, covered, header.mac)
    nonce = source.read_full(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise HeaderError("age file: it ends before the payload nonce")
    opener = Opener(payload_key(file_key, nonce))
    plain = pipe.Digest(hash_plaintext)
    plain_fanout = _fanout([plain], threaded=hash_plaintext, inline=[dst.write])
    batch = BATCH_CHUNKS * ENC_CHUNK
    pipe.settle_allocator()
    try:
        head = header.encode() + nonce
        pending = source.read_full(batch)
        while True:
            following = source.read_full(batch) if len(pending) == batch else b""
            # The header goes with the first batch: a one-batch file starts no thread.
            cipher_fanout.feed(head + pending if head else pending)
            head = b""
            released, error = opener.open(pending, at_eof=not following)
            plain_fanout.feed(released)
            if error is not None:
                plain_fanout.close()
                raise error
            if not following or plain_fanout.failed() or cipher_fanout.failed():
                break
            pending = following
    except BaseException:
        plain_fanout.close(raise_errors=False)
        cipher_fanout.close(raise_errors=False)
        raise
    # Both workers are stopped before either's error is raised, so none is left waiting.
    for fanout in (plain_fanout, cipher_fanout):
        fanout.close(raise_errors=False)
    plain_fanout.raise_error()
    cipher_fanout.raise_error()
    return DecryptResult(plain.size, plain.hexdigest(), cipher.size, cipher.hexdigest())
