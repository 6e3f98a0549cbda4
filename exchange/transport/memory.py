"""An in-memory hub that behaves like :class:`~exchange.transport.SftpTransport` on OpenSSH.

Rules:

1. Same contract, same errors: ``tests/contract/transport_contract.py`` runs one suite over
   this class and over the paramiko adapter on a real sshd, so a test that passes here passes
   there. When they differ, the real one is right and this one is fixed.
2. Faults are injected through :class:`MemoryFaults`, a plain mutable knob set that tests
   flip (the asyncssh ``_IOErrorSFTPServer`` idea without a server): a cut after N uploaded
   bytes, a hub that is down for N connects, a full disk, a server without posix-rename.
3. A "cut" behaves like a dropped connection: the ``.part`` written so far stays on the hub
   (nobody is left to remove it) and the next call reconnects.
"""

from __future__ import annotations

import builtins
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO

from exchange.errors import PermanentTransportError, TransientTransportError
from exchange.transport.port import (
    DEFAULT_MAX_ENTRIES,
    EntryKind,
    Listing,
    NameValidator,
    PutResult,
    RefusedEntry,
    RemoteEntry,
    RemoteNotFoundError,
    RemoteRefusedEntry,
    RemoteTooLargeError,
    SizeMismatchError,
    UnsupportedServerError,
    check_remote_path,
    classify_listed_name,
    copy_chunks,
    is_our_temporary,
    part_name,
    split_dir,
)

_CHUNK = 256 * 1024


@dataclass(slots=True)
class MemoryFaults:
    """Knobs a test sets to make the fake hub misbehave. Mutable on purpose."""

    #: Drop the connection once this many upload bytes have been written (in total).
    cut_after_bytes: int | None = None
    #: Refuse this many connection attempts (hub down), then accept.
    refuse_connects: int = 0
    #: Fail writes as a full disk would (OpenSSH reports ENOSPC as a generic failure).
    disk_full: bool = False
    #: Advertise no posix-rename@openssh.com extension.
    no_posix_rename: bool = False
    #: Refuse every request as permission denied.
    permission_denied: bool = False
    #: Perform the next rename to a final name ending in this suffix, then drop the connection
    #: before its reply arrives (the caller sees a transient error although the file is
    #: final). One-shot: reset once it fires.
    lose_rename_reply: str | None = None


@dataclass(slots=True)
class MemoryHub:
    """The fake hub's file system: folders, regular files and planted special entries."""

    dirs: set[str] = field(default_factory=lambda: {"."})
    files: dict[str, bytes] = field(default_factory=dict)
    #: Hostile entries (links, devices, folders posing as files) keyed by path.
    specials: dict[str, EntryKind] = field(default_factory=dict)
    #: Names that are not valid UTF-8, keyed by folder.
    raw_names: dict[str, list[bytes]] = field(default_factory=dict)

    def mkdirs(self, path: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            self.dirs.add("/".join(parts[:i]))


class _MemoryWriter:
    def __init__(self, owner: MemoryTransport, part: str) -> None:
        self._owner = owner
        self._part = part
        self.bytes_written = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self._owner._write_part(self._part, bytes(data))
        self.bytes_written += len(data)
        return len(data)


class _MemoryUpload:
    def __init__(self, owner: MemoryTransport, final: str, expected_size: int | None) -> None:
        self._owner = owner
        self._final = final
        self._part = part_name(final)
        self._expected = expected_size
        self._writer: _MemoryWriter | None = None
        self.result: PutResult | None = None

    def __enter__(self) -> _MemoryWriter:
        self._owner._begin_upload(self._final, self._part)
        self._writer = _MemoryWriter(self._owner, self._part)
        return self._writer

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._writer is not None
        if exc is not None:
            if self._owner._connected:
                self._owner.hub.files.pop(self._part, None)
            return
        written = self._writer.bytes_written
        if self._expected is not None and written != self._expected:
            self._owner.hub.files.pop(self._part, None)
            raise SizeMismatchError.local(self._final, self._expected, written)
        self._owner._finish_upload(self._part, self._final, written)
        self.result = PutResult(self._final, written)


class MemoryTransport:
    """A :class:`~exchange.transport.port.Transport` over a :class:`MemoryHub`."""

    def __init__(self, hub: MemoryHub | None = None, faults: MemoryFaults | None = None) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self.faults = faults if faults is not None else MemoryFaults()
        self.connects = 0
        self._connected = False
        self._uploaded_bytes = 0

    # -- connection ------------------------------------------------------------------------

    def _ensure(self) -> None:
        if self._connected:
            return
        if self.faults.refuse_connects > 0:
            self.faults.refuse_connects -= 1
            raise TransientTransportError("hub memory:22: connection refused")
        if self.faults.no_posix_rename:
            raise UnsupportedServerError(
                "hub memory:22: server does not support posix-rename@openssh.com"
            )
        self.connects += 1
        self._connected = True

    def _drop(self) -> TransientTransportError:
        self._connected = False
        return TransientTransportError("hub memory:22: connection lost during transfer")

    def _deny(self, path: str) -> None:
        if self.faults.permission_denied:
            raise PermanentTransportError(f"{path}: permission denied")

    def close(self) -> None:
        self._connected = False

    # -- upload ----------------------------------------------------------------------------

    def open_atomic(self, remote_final: str, *, expected_size: int | None = None) -> _MemoryUpload:
        check_remote_path(remote_final)
        return _MemoryUpload(self, remote_final, expected_size)

    def put_atomic(
        self, src: BinaryIO, remote_final: str, *, expected_size: int | None = None
    ) -> PutResult:
        upload = self.open_atomic(remote_final, expected_size=expected_size)
        with upload as writer:
            copy_chunks(src, writer, _CHUNK)
        assert upload.result is not None
        return upload.result

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> builtins.list[PutResult]:
        for final, _data in items:
            check_remote_path(final)
        results: builtins.list[PutResult] = []
        errors: builtins.list[PermanentTransportError] = []
        for final, data in items:
            try:
                results.append(self.put_atomic(io.BytesIO(data), final, expected_size=len(data)))
            except PermanentTransportError as error:
                errors.append(error)
        if errors:
            raise errors[0]
        return results

    def _begin_upload(self, final: str, part: str) -> None:
        self._ensure()
        self._deny(part)
        folder, _ = split_dir(final)
        if folder not in self.hub.dirs:
            raise RemoteNotFoundError(f"{folder}: no such folder on the hub")
        if final in self.hub.dirs or final in self.hub.specials:
            raise PermanentTransportError(f"{final}: exists and is not a regular file")
        # A leftover from an interrupted attempt: the next attempt removes it (port rule 2).
        self.hub.files.pop(part, None)
        self.hub.files[part] = b""

    def _write_part(self, part: str, data: bytes) -> None:
        if not self._connected:
            raise TransientTransportError("hub memory:22: connection lost during transfer")
        if self.faults.disk_full:
            raise PermanentTransportError(
                f"{part}: the hub refused the write (no space left on the hub)"
            )
        cut = self.faults.cut_after_bytes
        if cut is not None and self._uploaded_bytes + len(data) > cut:
            keep = max(0, cut - self._uploaded_bytes)
            self.hub.files[part] += data[:keep]
            self._uploaded_bytes = cut
            self.faults.cut_after_bytes = None
            raise self._drop()
        self.hub.files[part] += data
        self._uploaded_bytes += len(data)

    def _finish_upload(self, part: str, final: str, written: int) -> None:
        if not self._connected:
            raise TransientTransportError("hub memory:22: connection lost during transfer")
        data = self.hub.files[part]
        if len(data) != written:
            del self.hub.files[part]
            raise SizeMismatchError.remote(final, written, len(data))
        self.hub.files[final] = self.hub.files.pop(part)
        lost = self.faults.lose_rename_reply
        if lost is not None and final.endswith(lost):
            self.faults.lose_rename_reply = None
            raise self._drop()

    # -- read side -------------------------------------------------------------------------

    def list(
        self,
        remote_dir: str,
        *,
        validate: NameValidator | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> Listing:
        if remote_dir != ".":
            check_remote_path(remote_dir)
        self._ensure()
        self._deny(remote_dir)
        if remote_dir not in self.hub.dirs:
            raise RemoteNotFoundError(f"{remote_dir}: no such folder on the hub")
        raw: builtins.list[tuple[bytes, EntryKind]] = []
        prefix = "" if remote_dir == "." else remote_dir + "/"
        children = (
            [(p, EntryKind.REGULAR) for p in self.hub.files]
            + [(p, EntryKind.DIRECTORY) for p in self.hub.dirs]
            + list(self.hub.specials.items())
        )
        for path, kind in children:
            if path.startswith(prefix) and path != remote_dir and "/" not in path[len(prefix) :]:
                raw.append((path[len(prefix) :].encode(), kind))
        raw.extend((name, EntryKind.REGULAR) for name in self.hub.raw_names.get(remote_dir, []))
        entries: builtins.list[RemoteEntry] = []
        refused: builtins.list[RefusedEntry] = []
        temporaries: builtins.list[str] = []
        truncated = False
        for count, (name_bytes, kind) in enumerate(sorted(raw)):
            if count >= max_entries:
                truncated = True
                break
            if is_our_temporary(name_bytes.decode("utf-8", "replace"), kind, validate):
                temporaries.append(name_bytes.decode())
                continue
            name, refusal = classify_listed_name(name_bytes, kind, validate)
            if name is not None:
                entries.append(RemoteEntry(name, len(self.hub.files[prefix + name]), None))
            elif refusal is not None:
                refused.append(refusal)
        return Listing(
            tuple(sorted(entries, key=lambda e: e.name)),
            tuple(sorted(refused, key=lambda r: r.name)),
            truncated,
            tuple(sorted(temporaries)),
        )

    def get(self, remote: str, dst: BinaryIO, *, max_size: int) -> int:
        check_remote_path(remote)
        self._ensure()
        self._deny(remote)
        if remote in self.hub.specials or remote in self.hub.dirs:
            raise RemoteRefusedEntry(f"{remote}: not a regular file; refused")
        if remote not in self.hub.files:
            raise RemoteNotFoundError(f"{remote}: no such file on the hub")
        data = self.hub.files[remote]
        if len(data) > max_size:
            raise RemoteTooLargeError(
                f"{remote}: {len(data)} bytes is over the {max_size}-byte cap"
            )
        dst.write(data)
        return len(data)

    def remove(self, remote: str) -> bool:
        check_remote_path(remote, allow_temporary=True)
        self._ensure()
        self._deny(remote)
        if remote in self.hub.specials:
            del self.hub.specials[remote]
            return True
        return self.hub.files.pop(remote, None) is not None
