"""The transport port: what the rest of exchange may ask of the hub, and what it may rely on.

Rules:

1. Every method raises :class:`~exchange.errors.TransientTransportError` (retrying later may
   succeed: timeout, refused, reset, EOF) or :class:`~exchange.errors.PermanentTransportError`
   (stop and tell ops: host key, auth, permission, no space, unsafe path, missing
   ``posix-rename``). Nothing else escapes, so retry decisions read ``error.transient`` only.
2. Uploads are atomic: bytes go to a temporary name created exclusively, the byte count is
   checked, the file is closed, then renamed onto the final name with ``posix-rename``. A
   partner never sees a partial file under a final name; a retry of the same final name leaves
   exactly one file, because the name is deterministic. The temporary name is
   ``.<final>.<token>.part`` (hidden from a plain ``ls``; the shape ``core/naming.py``
   recognises) with a token derived from the final name, not drawn at random: so the next
   attempt for the same final name finds a leftover of an interrupted attempt without a
   listing, removes it and creates its own. That is safe because one daemon (holding the
   ledger lock) is the only writer of a given final name.
3. Everything read from the hub is hostile. Remote paths we are given are checked before any
   request (no ``..``, no absolute paths, no control characters); names coming back from a
   listing are checked against the caller's naming scheme; links and non-regular entries are
   refused; listings are capped in count and downloads in size.
4. Pure: this module does no I/O. It holds the protocol, the values and the path checks that
   :mod:`exchange.transport.memory` and the paramiko adapter share.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Protocol

from exchange.errors import PermanentTransportError

#: Suffix of the temporary name an upload writes before its rename. Listings skip these names.
PART_SUFFIX = ".part"

#: A remote name (one path component) is at most this long: OpenSSH and ext4 allow 255 bytes,
#: and the temporary name (``.``, ``.`` + 16-digit token, ``.part``) must still fit.
MAX_NAME_BYTES = 255 - 1 - 17 - len(PART_SUFFIX)

#: A remote path has at most this many components; hub paths are ``<partner>/<folder>/<name>``.
MAX_PATH_COMPONENTS = 8

#: Default cap on the entries one listing returns; a flooded folder cannot exhaust memory.
DEFAULT_MAX_ENTRIES = 10_000

#: A validator for names coming back from the hub: ``True`` means the name is one of ours.
NameValidator = Callable[[str], bool]

# One path component: printable, no separators, no leading dot (hidden names and `.`/`..`
# are never ours), no spaces or shell metacharacters.
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+=-]*")
_PART = re.compile(r"\.(.+)\.([0-9a-f]{16})\.part")


class RemotePathError(PermanentTransportError):
    """A remote path given to the transport is unsafe or malformed; nothing was sent."""

    default_hint = "this is a bug in the caller: remote paths come from exchange's naming scheme"


class RemoteNotFoundError(PermanentTransportError):
    """The remote file or folder does not exist (or this login cannot see it)."""

    default_hint = "check the partner's hub folder name in config/partners/<id>.toml"


class RemoteTooLargeError(PermanentTransportError):
    """A remote file is larger than the caller's cap; nothing past the cap was read."""

    default_hint = "a file this large is not one of ours; it has been left on the hub for ops"


class RemoteRefusedEntry(PermanentTransportError):
    """A remote path names a link or a non-regular file, which exchange never reads."""

    default_hint = "someone placed a link or special file on the hub; treat it as an incident"


class UnsupportedServerError(PermanentTransportError):
    """The server lacks an SFTP extension exchange relies on for safety."""

    default_hint = (
        "the hub must be OpenSSH (sftp-server or internal-sftp), which supports "
        "posix-rename@openssh.com; exchange never falls back to a non-atomic rename"
    )


class SizeMismatchError(PermanentTransportError):
    """An upload's byte count does not match what was expected; nothing was renamed."""

    default_hint = "the source changed while it was being sent, or the hub lost data; send again"

    @classmethod
    def local(cls, remote: str, expected: int, written: int) -> SizeMismatchError:
        return cls(f"{remote}: expected {expected} bytes, {written} were written; not renamed")

    @classmethod
    def remote(cls, remote: str, written: int, stored: int) -> SizeMismatchError:
        return cls(f"{remote}: wrote {written} bytes but the hub stored {stored}; not renamed")


class EntryKind(enum.Enum):
    """What a listed name is. Only ``REGULAR`` entries are ever returned as usable."""

    REGULAR = "regular"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"


class RefusalReason(enum.Enum):
    """Why a listed entry was refused."""

    BAD_NAME = "bad_name"
    NOT_REGULAR = "not_regular"
    UNDECODABLE = "undecodable"


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """A regular file on the hub whose name passed validation."""

    name: str
    size: int
    mtime: int | None


@dataclass(frozen=True, slots=True)
class RefusedEntry:
    """An entry a listing refused. ``name`` is escaped (``repr``-style), safe to log."""

    name: str
    kind: EntryKind
    reason: RefusalReason


@dataclass(frozen=True, slots=True)
class Listing:
    """A folder listing: usable entries sorted by name, refused ones, and whether it was capped.

    ``truncated`` is true when the folder held more than the cap; the caller should raise an
    incident (TESTPLAN 52: receipts flooding) and still process what it got.
    """

    entries: tuple[RemoteEntry, ...]
    refused: tuple[RefusedEntry, ...]
    truncated: bool
    #: Our own temporary upload names present in the folder (in progress or left behind).
    temporaries: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PutResult:
    """An upload that is complete under its final name."""

    remote_path: str
    size: int


class AtomicWriter(Protocol):
    """The writable end of an atomic upload; the encryptor writes straight into it."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...

    @property
    def bytes_written(self) -> int: ...


class AtomicUpload(Protocol):
    """A context manager for one atomic upload.

    ``__enter__`` has created ``<final>.part`` exclusively (removing a leftover of an earlier
    attempt). A clean ``__exit__`` checks ``expected_size``, closes, and renames onto the final
    name; after it, ``result`` is set. An exception inside the block removes the temporary
    file (best effort: a dead connection cannot remove it, and the next attempt will) and
    propagates as a transport error when it came from the transport, unchanged otherwise.
    """

    result: PutResult | None

    def __enter__(self) -> AtomicWriter: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Transport(Protocol):
    """A connection to the hub. Methods are not thread-safe; use one transport per thread."""

    def open_atomic(self, remote_final: str, *, expected_size: int | None = None) -> AtomicUpload:
        """Start an atomic upload to ``remote_final`` (see :class:`AtomicUpload`)."""
        ...

    def put_atomic(
        self, src: BinaryIO, remote_final: str, *, expected_size: int | None = None
    ) -> PutResult:
        """Copy ``src`` to ``remote_final`` atomically (read in chunks, flat memory)."""
        ...

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> builtins.list[PutResult]:
        """Upload small files, each atomically, pipelined across files.

        Every item follows the same recipe as :meth:`open_atomic`. Items are independent: if
        some fail permanently the others still complete, and the first failure is raised
        afterwards; a transient failure is raised at once. Re-running the whole batch is
        always safe (deterministic names), so retry it as a unit.
        """
        ...

    def list(
        self,
        remote_dir: str,
        *,
        validate: NameValidator | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> Listing:
        """List regular files in ``remote_dir`` whose names pass ``validate``.

        Our own ``.part`` temporaries (:func:`is_our_temporary`) are skipped and reported in
        ``Listing.temporaries``; anything else that is not a valid name of a regular file,
        a look-alike temporary included, is returned in ``Listing.refused``.
        """
        ...

    def get(self, remote: str, dst: BinaryIO, *, max_size: int) -> int:
        """Stream the regular file ``remote`` into ``dst``; return the byte count.

        Raises :class:`RemoteTooLargeError` without reading past ``max_size``, and
        :class:`RemoteRefusedEntry` for a link or non-regular file.
        """
        ...

    def remove(self, remote: str) -> bool:
        """Remove ``remote``; return False if it did not exist (idempotent for retries)."""
        ...

    def close(self) -> None:
        """Close the connection; the transport may reconnect on its next use."""
        ...


def check_remote_path(path: str, *, allow_temporary: bool = False) -> tuple[str, ...]:
    """Return the components of a relative remote path, or raise :class:`RemotePathError`.

    Paths are relative to the login's chroot and made of safe components only, so a typo or
    a hostile name can never address anything outside the folders exchange manages (``..``,
    ``/abs``, ``a//b``, ``./``, control characters, over-long names).
    """
    if not path or path.startswith("/"):
        raise RemotePathError(f"remote path {path!r}: must be relative to the hub login's root")
    parts = tuple(path.split("/"))
    if len(parts) > MAX_PATH_COMPONENTS:
        raise RemotePathError(f"remote path {path!r}: more than {MAX_PATH_COMPONENTS} components")
    for i, part in enumerate(parts):
        if allow_temporary and i == len(parts) - 1 and is_part_name(part):
            continue
        if not is_safe_component(part):
            raise RemotePathError(f"remote path {path!r}: unsafe component {part!r}")
    return parts


def is_safe_component(name: str) -> bool:
    """True for a path component exchange may send or accept (before any naming-scheme check)."""
    return (
        _COMPONENT.fullmatch(name) is not None
        and len(name.encode("utf-8")) <= MAX_NAME_BYTES
        and not name.endswith(PART_SUFFIX)
    )


def copy_chunks(src: BinaryIO, dst: AtomicWriter, chunk_size: int) -> int:
    """Copy ``src`` into ``dst`` in chunks of ``chunk_size`` (flat memory); return the count."""
    total = 0
    while True:
        chunk = src.read(chunk_size)
        if not chunk:
            return total
        dst.write(chunk)
        total += len(chunk)


def _part_token(final_name: str) -> str:
    return hashlib.sha256(b"exchange/v1 temp\n" + final_name.encode("utf-8")).hexdigest()[:16]


def part_name(remote_final: str) -> str:
    """The temporary path an upload to ``remote_final`` writes first (see rule 2)."""
    head, sep, name = remote_final.rpartition("/")
    return f"{head}{sep}.{name}.{_part_token(name)}{PART_SUFFIX}"


def _temp_parts(name: str) -> tuple[str, str] | None:
    """(final, token) of a name in the temporary grammar ``.<final>.<16 hex>.part``, or None."""
    match = _PART.fullmatch(name)
    if match is None or not is_safe_component(match.group(1)):
        return None
    return match.group(1), match.group(2)


def part_final(name: str) -> str | None:
    """The final name ``name`` is our own temporary for, or None: only exactly the name
    :func:`part_name` gives (the token derived from the final name) counts."""
    parts = _temp_parts(name)
    return parts[0] if parts is not None and parts[1] == _part_token(parts[0]) else None


def is_part_name(name: str) -> bool:
    """True for exactly the temporary name we would write for some safe final name."""
    return part_final(name) is not None


def is_our_temporary(name: str, kind: EntryKind, validate: NameValidator | None) -> bool:
    """True for a listed entry that is an upload in progress (or its leftover): a regular file
    named in the temporary grammar of FORMAT.md §6.1 (``.<final>.<16 hex>.part``) for a final
    name the caller's validator allows in the folder. The token is the writer's choice there,
    so a partner's upload in progress counts too. Without a validator only the exact name
    :func:`part_name` gives counts. Listings skip these (reporting them in
    ``Listing.temporaries``); any other temporary-looking entry, a directory or a link under a
    temporary name included, is refused like any bad name (security review L4)."""
    parts = _temp_parts(name)
    if parts is None or kind is not EntryKind.REGULAR:
        return False
    final, token = parts
    return validate(final) if validate is not None else token == _part_token(final)


def split_dir(path: str) -> tuple[str, str]:
    """Split a checked remote path into (folder, name); folder is ``"."`` at the root."""
    head, _, name = path.rpartition("/")
    return (head or "."), name


def classify_listed_name(
    raw: bytes, kind: EntryKind, validate: NameValidator | None
) -> tuple[str | None, RefusedEntry | None]:
    """Decide about one raw name from a hub listing.

    Returns ``(name, None)`` for a usable regular file, ``(None, None)`` for names skipped
    silently (``.``, ``..`` and our own temporaries, see :func:`is_our_temporary`), or
    ``(None, refusal)``.
    """
    if raw in (b".", b".."):
        return None, None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, RefusedEntry(repr(raw)[2:-1], kind, RefusalReason.UNDECODABLE)
    if is_our_temporary(name, kind, validate):
        return None, None
    if _temp_parts(name) is not None:
        # A temporary name, but not a regular file or not for a name allowed here.
        reason = (
            RefusalReason.NOT_REGULAR if kind is not EntryKind.REGULAR else RefusalReason.BAD_NAME
        )
        return None, RefusedEntry(name, kind, reason)
    if not is_safe_component(name) or (validate is not None and not validate(name)):
        return None, RefusedEntry(repr(name)[1:-1], kind, RefusalReason.BAD_NAME)
    if kind is not EntryKind.REGULAR:
        return None, RefusedEntry(name, kind, RefusalReason.NOT_REGULAR)
    return name, None


class CappedSink(io.RawIOBase):
    """A memory sink for a small download (a manifest, a receipt): keeps at most ``cap``
    bytes and remembers whether more came, so a hostile file cannot exhaust memory."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.overflow = False

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        room = self.cap - len(self.data)
        if len(b) > room:
            self.overflow = True
        self.data += bytes(b)[: max(room, 0)]
        return len(b)
