"""The SFTP client to the hub: the only module in exchange that imports paramiko.

The paramiko-free parts live beside it: ``port`` (the protocol and path checks), ``pins``
(host key pins), ``upload`` (the atomic upload recipe), ``memory`` (the fake) and ``retry``.

Rules:

1. Host keys are pinned. After key exchange and before authentication or any SFTP byte, the
   key the server proved it holds is compared with the pins; anything else closes the
   connection with :class:`~exchange.errors.HostKeyError`. There is no auto-accept and no
   known_hosts file: paramiko's ``MissingHostKeyPolicy`` is not involved because we never
   use ``SSHClient``, which also lets us set window and packet sizes on the transport.
2. Authentication is our Ed25519 key only: no agent, no key discovery, no password.
3. Every blocking step has a timeout (connect, banner, key exchange, auth, each SFTP wait), so
   a stalled hub fails as a transient error instead of hanging the daemon.
4. Errors leave this module classified (see ``port`` rule 1 and :func:`_classify`).
5. One connection is reused across calls; after a transient error it is dropped and the next
   call reconnects.
6. The server must advertise ``posix-rename@openssh.com``: paramiko discards the extension list
   of the SFTP version reply, so :class:`_SFTPClient` parses it. Without it we refuse to
   upload rather than fall back to the non-atomic SFTP v3 ``rename``.
7. Throughput: writes go out as pipelined requests of up to 255 KiB (what OpenSSH advertises
   in ``limits@openssh.com``); reads use a bounded number of outstanding requests, because
   paramiko's channel buffer copies its whole backlog on every read and an unbounded prefetch
   collapses. See ``bench/transport/NOTES.md`` for the measurements.
"""

from __future__ import annotations

import builtins
import errno
import socket
import stat
import struct
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import paramiko

from exchange.errors import (
    HostKeyError,
    KeyFileError,
    PermanentTransportError,
    TransientTransportError,
    TransportError,
)
from exchange.transport.pins import fingerprint, host_key_algorithms, matches, parse_pins
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
    UnsupportedServerError,
    check_remote_path,
    classify_listed_name,
    is_our_temporary,
)
from exchange.transport.upload import SessionUpload, put_many

_KIB = 1024
#: OpenSSH's sftp-server accepts requests up to 256 KiB and reads/writes up to 255 KiB.
_MAX_IO = 255 * _KIB
#: SFTP v3 without limits@openssh.com: 32 KiB is what every server must accept.
_SAFE_IO = 32 * _KIB
#: Bytes of the first SSH packet of a WRITE: below OpenSSH's 32 KiB channel packet, less
#: paramiko's 64-byte allowance for the packet's own header.
_FIRST_SLICE = 32 * _KIB - 64
_POSIX_RENAME = "posix-rename@openssh.com"
_FSYNC = "fsync@openssh.com"
_LIMITS = "limits@openssh.com"
_STATVFS = "statvfs@openssh.com"

#: Ciphers in our order of preference: AES-GCM is fastest with AES-NI, then the CTR modes
#: (paramiko has no chacha20-poly1305). CBC is never offered.
_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")

# Socket-level errnos that mean "the network or the peer went away", hence transient.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
    }
)

_SFTP = paramiko.sftp


class StrictKexError(PermanentTransportError):
    """The hub did not negotiate strict key exchange (Terrapin, CVE-2023-48795)."""

    default_hint = (
        "upgrade the hub's OpenSSH (9.6 or a distribution build with the Terrapin fix); "
        "set require_strict_kex = false only as a temporary, recorded exception"
    )


@dataclass(frozen=True, slots=True)
class SftpSettings:
    """How to reach the hub. ``host_keys`` are OpenSSH public key lines (the pins)."""

    host: str
    port: int
    login: str
    key_path: Path
    host_keys: tuple[str, ...]
    connect_timeout: float = 15.0
    #: Banner, key exchange, auth and every SFTP wait; a stall longer than this is an error.
    io_timeout: float = 60.0
    keepalive_interval: int = 15
    require_strict_kex: bool = True
    #: Ask the hub to fsync each upload before the rename (fsync@openssh.com), so a hub crash
    #: cannot leave an empty or partial file under a final name.
    fsync: bool = True
    #: Our receive window and packet size on the SFTP channel (downloads).
    window_size: int = 32 * 1024 * _KIB
    max_packet_size: int = 256 * _KIB
    #: Outstanding READ requests per download (see rule 7): 32 x 255 KiB = 8 MiB in flight,
    #: a quarter of the window, so the server never waits for a window adjust.
    read_requests: int = 32
    #: Upper bound for READ/WRITE request sizes; the server's limits may lower it.
    io_size: int = _MAX_IO


@dataclass(frozen=True, slots=True)
class _ServerInfo:
    extensions: dict[str, bytes]
    read_size: int
    write_size: int


class _SFTPClient(paramiko.SFTPClient):  # type: ignore[misc]
    """paramiko's SFTP client, keeping the extension list of the server's VERSION reply."""

    extensions: dict[str, bytes]

    def _write_all(self, out: bytes | memoryview) -> None:
        # paramiko re-slices the remaining bytes after every partial channel send, copying a
        # 255 KiB request about four times over; a memoryview slices for free.
        view = memoryview(out)
        while view:
            sent = self.sock.send(view)
            if sent <= 0:
                raise EOFError()
            view = view[sent:]

    def _read_all(self, n: int) -> bytes:
        # paramiko grows the result with ``out += x`` (quadratic for a 255 KiB reply that
        # arrives in many channel packets); we always run over a Channel, never a raw socket.
        chunks = []
        while n > 0:
            chunk = self.sock.recv(n)
            if not chunk:
                raise EOFError()
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _send_version(self) -> int:
        message = paramiko.Message()
        message.add_int(3)
        self._send_packet(_SFTP.CMD_INIT, message)
        kind, data = self._read_packet()
        if kind != _SFTP.CMD_VERSION:
            raise paramiko.SSHException("incompatible sftp protocol")
        self.extensions = _parse_extensions(bytes(data))
        return int(struct.unpack(">I", data[:4])[0])


def _parse_extensions(data: bytes) -> dict[str, bytes]:
    """Parse the (name, data) string pairs after the version number; stop at malformed input."""
    found: dict[str, bytes] = {}
    pos = 4
    while pos + 4 <= len(data):
        strings = []
        for _ in range(2):
            if pos + 4 > len(data):
                return found
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            pos += 4
            strings.append(data[pos : pos + length])
            pos += length
        if pos > len(data):
            return found
        found[strings[0].decode("ascii", "replace")] = strings[1]
    return found


class _ChunkPipe(paramiko.buffered_pipe.BufferedPipe):  # type: ignore[misc]
    """paramiko's channel input buffer, keeping received packets as a queue of chunks.

    paramiko's own buffer is one ``array`` that is copied in on every packet, copied out on
    every read and then shifted down with ``del buf[:n]``, which moves the whole backlog: with
    many reads outstanding that is quadratic, and downloads collapse (issue 4 saw 5 MB/s).
    Here a packet is appended as is and a read joins only the chunks it takes. The lock,
    condition and event protocol is paramiko's, unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._chunks: deque[memoryview] = deque()
        self._size = 0

    def set_event(self, event: Any) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size > 0:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()
            self._chunks.append(memoryview(bytes(data)))
            self._size += len(data)
            self._cv.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._size == 0 and not self._closed:
                if timeout == 0.0:
                    raise paramiko.buffered_pipe.PipeTimeout()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise paramiko.buffered_pipe.PipeTimeout()
                self._cv.wait(remaining)
            return self._take(nbytes)

    def _take(self, nbytes: int) -> bytes:
        parts: builtins.list[memoryview] = []
        wanted = nbytes
        while wanted > 0 and self._chunks:
            chunk = self._chunks[0]
            if len(chunk) <= wanted:
                parts.append(self._chunks.popleft())
                wanted -= len(chunk)
            else:
                parts.append(chunk[:wanted])
                self._chunks[0] = chunk[wanted:]
                wanted = 0
        self._size -= nbytes - wanted
        if self._size == 0 and self._event is not None and not self._closed:
            self._event.clear()
        if not parts:
            return b""  # closed and drained: paramiko's "end of stream"
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    def empty(self) -> bytes:
        with self._lock:
            return self._take(self._size)

    def __len__(self) -> int:
        with self._lock:
            return self._size


class _Responses:
    """Collects asynchronous SFTP responses by request number (paramiko calls back here)."""

    def __init__(self) -> None:
        self.by_number: dict[int, tuple[int, Any]] = {}

    def _async_response(self, kind: int, message: Any, number: int) -> None:
        self.by_number[number] = (kind, message)


class _Connection:
    def __init__(self, transport: Any, sftp: _SFTPClient, info: _ServerInfo) -> None:
        self.transport = transport
        self.sftp = sftp
        self.info = info

    def alive(self) -> bool:
        return bool(self.transport.is_active()) and not self.sftp.get_channel().closed

    def close(self) -> None:
        with suppress(Exception):
            self.sftp.close()
        with suppress(Exception):
            self.transport.close()


def server_info(sftp: Any, where: str, io_cap: int) -> _ServerInfo:
    """Check the server's SFTP extensions and learn its read/write limits."""
    extensions = getattr(sftp, "extensions", {})
    if _POSIX_RENAME not in extensions:
        raise UnsupportedServerError(
            f"{where}: server does not support {_POSIX_RENAME}; refusing to use it"
        )
    read_size = write_size = _SAFE_IO
    if _LIMITS in extensions:
        kind, msg = sftp._request(_SFTP.CMD_EXTENDED, _LIMITS)
        if kind == _SFTP.CMD_EXTENDED_REPLY:
            _packet, read_max, write_max = (msg.get_int64() for _ in range(3))
            read_size = int(read_max) or _MAX_IO
            write_size = int(write_max) or _MAX_IO
    return _ServerInfo(dict(extensions), min(read_size, io_cap), min(write_size, io_cap))


def _load_key(path: Path) -> Any:
    try:
        return paramiko.Ed25519Key.from_private_key_file(str(path))
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: hub SSH key not found", hint="run 'exchange keys generate'"
        ) from None
    except PermissionError:
        raise KeyFileError(f"{path}: cannot read the hub SSH key (permission denied)") from None
    except (paramiko.SSHException, ValueError) as error:
        raise KeyFileError(
            f"{path}: not an unencrypted OpenSSH Ed25519 private key ({error})",
            hint="the hub key must be the 'hub-ssh-ed25519' file made by 'exchange keys generate'",
        ) from None


class SftpTransport:
    """A :class:`~exchange.transport.port.Transport` to an OpenSSH hub over SFTP."""

    def __init__(self, settings: SftpSettings) -> None:
        self.settings = settings
        self._pins = parse_pins(settings.host_keys)
        self._key = _load_key(settings.key_path)
        self._conn: _Connection | None = None
        self._session_cache: tuple[_Connection, _Session] | None = None
        self.connects = 0

    @property
    def _where(self) -> str:
        return f"hub {self.settings.host}:{self.settings.port}"

    # -- connection ------------------------------------------------------------------------

    def _connection(self) -> _Connection:
        if self._conn is not None and self._conn.alive():
            return self._conn
        self.close()
        with self._classified("connect"):
            self._conn = self._connect()
        self.connects += 1
        return self._conn

    def _connect(self) -> _Connection:
        s = self.settings
        sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout)
        transport = paramiko.Transport(
            sock, default_window_size=s.window_size, default_max_packet_size=s.max_packet_size
        )
        try:
            transport.banner_timeout = s.io_timeout
            transport.handshake_timeout = s.io_timeout
            transport.auth_timeout = s.io_timeout
            options = transport.get_security_options()
            options.ciphers = tuple(c for c in _CIPHERS if c in options.ciphers)
            # Only ask for key types we hold pins for, so the server presents a pinned one.
            options.key_types = host_key_algorithms(self._pins)
            try:
                transport.start_client(timeout=s.io_timeout)
            except paramiko.ssh_exception.IncompatiblePeer as error:
                if "host key" not in str(error):
                    raise
                # We offered only the pinned key types: the server holds none of them.
                pinned = ", ".join(pin.fingerprint for pin in self._pins)
                raise HostKeyError(
                    f"{self._where}: server has no host key of a pinned type "
                    f"(pinned: {pinned}); connection refused"
                ) from None
            self._check_host_key(transport)
            if s.require_strict_kex and not transport.agreed_on_strict_kex:
                raise StrictKexError(f"{self._where}: server did not negotiate strict kex")
            remaining = transport.auth_publickey(s.login, self._key)
            if remaining:
                raise PermanentTransportError(
                    f"{self._where}: login {s.login!r} needs more than our key: {remaining}"
                )
            transport.set_keepalive(s.keepalive_interval)
            channel = transport.open_session(
                window_size=s.window_size, max_packet_size=s.max_packet_size
            )
            # Swapped before the subsystem starts, so no byte has been buffered yet.
            channel.in_buffer = _ChunkPipe()
            channel.invoke_subsystem("sftp")
            sftp = _SFTPClient(channel)
            sftp.get_channel().settimeout(s.io_timeout)
            info = server_info(sftp, self._where, s.io_size)
        except BaseException:
            transport.close()
            raise
        return _Connection(transport, sftp, info)

    def _check_host_key(self, transport: Any) -> None:
        key = transport.get_remote_server_key()
        blob = bytes(key.asbytes())
        if not matches(self._pins, str(key.get_name()), blob):
            transport.close()
            pinned = ", ".join(pin.fingerprint for pin in self._pins)
            raise HostKeyError(
                f"{self._where}: host key {key.get_name()} {fingerprint(blob)} "
                f"is not pinned (pinned: {pinned}); connection refused"
            )

    def negotiated(self) -> dict[str, str]:
        """What the current connection negotiated (for ``status`` and logs); empty if none."""
        conn = self._conn
        if conn is None:
            return {}
        t = conn.transport
        return {
            "cipher": str(t.remote_cipher),
            "mac": str(t.remote_mac),
            "kex": str(t.kex_engine.__class__.__name__),
            "host_key_type": str(t.host_key_type),
            "strict_kex": "yes" if t.agreed_on_strict_kex else "no",
            "server": str(t.remote_version),
        }

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> SftpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- error classification --------------------------------------------------------------

    @contextmanager
    def _classified(self, action: str, path: str = "") -> Iterator[None]:
        try:
            yield
        except (OSError, EOFError, paramiko.SSHException) as error:
            # Anything else (a bug, a KeyboardInterrupt, our own ExchangeErrors) passes
            # through unchanged: only failures of the conversation with the hub are mapped.
            translated = self._classify(error, action, path)
            if translated.transient:
                self.close()
            raise translated from error

    def _classify(self, error: Exception, action: str, path: str) -> TransportError:
        """Map a paramiko/socket/SFTP error to transient or permanent.

        The rule: if the connection is gone, it is transient, whatever paramiko called it.
        A status the server answered with is permanent (the server is up and said no), with
        one ambiguity documented here: OpenSSH reports ENOSPC and EDQUOT on WRITE as the
        generic SSH_FX_FAILURE, indistinguishable from other write failures. We treat it as
        permanent (stop and tell ops): retrying against a full hub only churns, and ops must
        free space anyway. When the hub supports statvfs we say whether space is the cause.
        """
        where = f"{self._where}: {action}" + (f" {path}" if path else "")
        if isinstance(error, paramiko.AuthenticationException):
            return PermanentTransportError(
                f"{where}: authentication failed for login {self.settings.login!r}",
                hint="check that the hub's authorized_keys holds our hub-ssh-ed25519.pub",
            )
        if isinstance(error, paramiko.ssh_exception.IncompatiblePeer):
            return PermanentTransportError(f"{where}: no common algorithms with the hub ({error})")
        connection_gone = self._conn is None or not self._conn.alive()
        if isinstance(error, socket.timeout | TimeoutError):
            return TransientTransportError(f"{where}: timed out")
        if isinstance(error, paramiko.SSHException | EOFError | socket.gaierror):
            return TransientTransportError(f"{where}: {error or type(error).__name__}")
        if isinstance(error, OSError):
            code = error.errno
            if code in _TRANSIENT_ERRNOS or (code is None and connection_gone):
                return TransientTransportError(f"{where}: {error.strerror or error}")
            if code == errno.ENOENT:
                return RemoteNotFoundError(f"{where}: no such file or folder on the hub")
            if code in (errno.EACCES, errno.EPERM):
                return PermanentTransportError(
                    f"{where}: permission denied",
                    hint="the hub login may not write there; re-run 'exchange hub provision'",
                )
            if action == "write":
                return PermanentTransportError(
                    f"{where}: the hub refused the write ({error}){self._space_note(path)}",
                    hint="the hub may be out of disk space or quota; free space, then retry",
                )
            return PermanentTransportError(f"{where}: the hub refused the request ({error})")
        raise AssertionError(f"unclassified {type(error).__name__}")  # pragma: no cover

    def _space_note(self, path: str) -> str:
        conn = self._conn
        if conn is None or _STATVFS not in conn.info.extensions or not path:
            return ""
        with suppress(Exception):
            kind, msg = conn.sftp._request(
                _SFTP.CMD_EXTENDED, _STATVFS, "/" + path.rpartition("/")[0]
            )
            if kind == _SFTP.CMD_EXTENDED_REPLY:
                _bsize, frsize, _blocks, _bfree, bavail = (msg.get_int64() for _ in range(5))
                if int(bavail) * int(frsize) < 1024 * _KIB:
                    return "; no space left on the hub"
        return ""

    # -- upload ----------------------------------------------------------------------------

    def _session(self) -> _Session:
        conn = self._connection()
        if self._session_cache is None or self._session_cache[0] is not conn:
            self._session_cache = (conn, _Session(self, conn))
        return self._session_cache[1]

    def open_atomic(self, remote_final: str, *, expected_size: int | None = None) -> SessionUpload:
        check_remote_path(remote_final)
        return SessionUpload(self._session(), remote_final, expected_size)

    def put_atomic(
        self, src: BinaryIO, remote_final: str, *, expected_size: int | None = None
    ) -> PutResult:
        upload = self.open_atomic(remote_final, expected_size=expected_size)
        # One reusable buffer: every chunk is on its way to the channel before the next read.
        buffer = bytearray(self._session().write_size)
        view = memoryview(buffer)
        readinto = getattr(src, "readinto", None)
        with upload as writer:
            if readinto is None:
                while chunk := src.read(len(buffer)):
                    writer.write(chunk)
            else:
                while count := readinto(view):
                    writer.write(view[:count])
        assert upload.result is not None
        return upload.result

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[PutResult]:
        session = self._session()
        with self._classified("upload", items[0][0] if items else ""):
            return put_many(session, items)

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
        conn = self._connection()
        entries: builtins.list[RemoteEntry] = []
        refused: builtins.list[RefusedEntry] = []
        temporaries: builtins.list[str] = []
        seen = 0
        truncated = False
        with self._classified("list", remote_dir):
            _kind, msg = conn.sftp._request(_SFTP.CMD_OPENDIR, _abs(remote_dir))
            handle = msg.get_binary()
            try:
                while not truncated:
                    try:
                        _kind, msg = conn.sftp._request(_SFTP.CMD_READDIR, handle)
                    except EOFError:
                        break
                    for _ in range(msg.get_int()):
                        raw = bytes(msg.get_string())
                        longname = msg.get_string()
                        attrs = paramiko.SFTPAttributes._from_msg(msg, raw, longname)
                        if raw in (b".", b".."):
                            continue
                        seen += 1
                        if seen > max_entries:
                            truncated = True
                            break
                        kind = _kind_of(attrs.st_mode)
                        if is_our_temporary(raw.decode("utf-8", "replace"), kind, validate):
                            temporaries.append(raw.decode("utf-8"))
                            continue
                        name, refusal = classify_listed_name(raw, kind, validate)
                        if name is not None:
                            entries.append(
                                RemoteEntry(name, int(attrs.st_size or 0), attrs.st_mtime)
                            )
                        elif refusal is not None:
                            refused.append(refusal)
            finally:
                with suppress(OSError, EOFError):
                    conn.sftp._request(_SFTP.CMD_CLOSE, handle)
        entries.sort(key=lambda e: e.name)
        refused.sort(key=lambda r: r.name)
        return Listing(tuple(entries), tuple(refused), truncated, tuple(sorted(temporaries)))

    def get(self, remote: str, dst: BinaryIO, *, max_size: int) -> int:
        check_remote_path(remote)
        conn = self._connection()
        with self._classified("get", remote):
            attrs = conn.sftp.lstat(_abs(remote))
            self._check_readable(remote, attrs, max_size)
            handle_file = conn.sftp.open(_abs(remote), "r")
            try:
                # The name may have been swapped between lstat and open: check the open file.
                opened = handle_file.stat()
                self._check_readable(remote, opened, max_size)
                size = int(opened.st_size or 0)
                count = self._read_pipelined(conn, handle_file.handle, remote, dst, size)
            except BaseException as error:
                if isinstance(error, TransportError) and conn.alive():
                    handle_file.close()
                else:
                    # The connection is broken or stalled: closing would only wait for the
                    # timeout again. Mark the handle closed so paramiko's __del__ leaves it.
                    handle_file._closed = True
                raise
            handle_file.close()
            return count

    @staticmethod
    def _check_readable(remote: str, attrs: Any, max_size: int) -> None:
        if _kind_of(attrs.st_mode) is not EntryKind.REGULAR:
            raise RemoteRefusedEntry(f"{remote}: not a regular file; refused")
        if int(attrs.st_size or 0) > max_size:
            raise RemoteTooLargeError(
                f"{remote}: {attrs.st_size} bytes is over the {max_size}-byte cap"
            )

    def _read_pipelined(
        self, conn: _Connection, handle: bytes, remote: str, dst: BinaryIO, size: int
    ) -> int:
        """Read ``size`` bytes (the open file's size, already checked against the cap) with at
        most ``read_requests`` READs outstanding, writing in file order.

        Hub files are immutable once renamed; one that changes while read comes out short or
        long and fails the manifest's SHA-256 check downstream, and never exceeds the cap.
        """
        sftp = conn.sftp
        request_size = conn.info.read_size
        responses = _Responses()
        in_flight: deque[tuple[int, int, int]] = deque()
        next_offset = 0
        written = 0
        eof = False

        def request(offset: int, length: int) -> int:
            return int(
                sftp._async_request(responses, _SFTP.CMD_READ, handle, _SFTP.int64(offset), length)
            )

        def wait(number: int) -> tuple[int, Any]:
            while number not in responses.by_number:
                sftp._read_response()
            return responses.by_number.pop(number)

        def accept(data: bytes) -> None:
            nonlocal written
            if written + len(data) > size:
                raise RemoteTooLargeError(f"{remote}: grew past {size} bytes while being read")
            dst.write(data)
            written += len(data)

        # Responses to requests still in flight when this returns or raises are dropped by
        # paramiko once ``responses`` is gone (its request table holds weak references).
        while True:
            while not eof and len(in_flight) < self.settings.read_requests and next_offset < size:
                length = min(request_size, size - next_offset)
                in_flight.append((request(next_offset, length), next_offset, length))
                next_offset += length
            if not in_flight:
                return written
            number, offset, length = in_flight.popleft()
            kind, msg = wait(number)
            if offset != written and kind != _SFTP.CMD_STATUS:
                raise paramiko.SSHException("sftp read responses out of order")
            # A short read before the end: fetch the gap now, so the next answer is in order.
            while True:
                if kind == _SFTP.CMD_STATUS:
                    eof = eof or _is_eof(sftp, msg)
                    break
                data = msg.get_string()
                if not data:
                    raise paramiko.SSHException("sftp server answered a read with no data")
                accept(data)
                if written >= offset + length:
                    break
                kind, msg = wait(request(written, offset + length - written))

    def remove(self, remote: str) -> bool:
        check_remote_path(remote, allow_temporary=True)
        conn = self._connection()
        with self._classified("remove", remote):
            try:
                conn.sftp.remove(_abs(remote))
            except OSError as error:
                if error.errno == errno.ENOENT:
                    return False
                raise
        return True


def _is_eof(sftp: Any, msg: Any) -> bool:
    """True for an EOF status; raises ``OSError`` for an error status (as paramiko maps it)."""
    try:
        sftp._convert_status(msg)
    except EOFError:
        return True  # a file that shrank while read: the digest check downstream says so
    raise paramiko.SSHException("sftp server answered a read with a bare OK")


def _abs(path: str) -> str:
    # Absolute within the login's chroot, so the server's notion of a home folder never matters.
    return "/" if path == "." else "/" + path


def _kind_of(mode: int | None) -> EntryKind:
    if mode is None:
        return EntryKind.OTHER
    if stat.S_ISREG(mode):
        return EntryKind.REGULAR
    if stat.S_ISDIR(mode):
        return EntryKind.DIRECTORY
    if stat.S_ISLNK(mode):
        return EntryKind.SYMLINK
    return EntryKind.OTHER


class _Session:
    """:class:`~exchange.transport.upload.Session` over one paramiko SFTP connection."""

    def __init__(self, owner: SftpTransport, conn: _Connection) -> None:
        self._owner = owner
        self._sftp = conn.sftp
        self._conn = conn
        self._responses = _Responses()
        self.write_size = conn.info.write_size
        self.fsync = owner.settings.fsync and _FSYNC in conn.info.extensions

    def _send(self, kind: int, *args: Any) -> int:
        return int(self._sftp._async_request(self._responses, kind, *args))

    def send_open_excl(self, path: str) -> int:
        flags = _SFTP.SFTP_FLAG_WRITE | _SFTP.SFTP_FLAG_CREATE | _SFTP.SFTP_FLAG_EXCL
        return self._send(_SFTP.CMD_OPEN, _abs(path), flags, paramiko.SFTPAttributes())

    def send_write(self, handle: bytes, offset: int, data: bytes | memoryview) -> int:
        # Built by hand: paramiko would copy a 255 KiB payload three times (into a Message,
        # out of it, and again when prefixing the length) before the channel copies it again.
        sftp = self._sftp
        with sftp._lock:
            number = int(sftp.request_number)
            sftp._expecting[number] = self._responses
            sftp.request_number += 1
        size = len(data)
        header = (
            struct.pack(
                ">IBII",
                1 + 4 + 4 + len(handle) + 8 + 4 + size,
                _SFTP.CMD_WRITE,
                number,
                len(handle),
            )
            + handle
            + struct.pack(">QI", offset, size)
        )
        # The header travels with the first slice so it never costs an SSH packet of its own.
        view = memoryview(data)
        first = _FIRST_SLICE - len(header)
        sftp._write_all(header + view[:first].tobytes())
        if size > first:
            sftp._write_all(view[first:])
        return number

    def send_fsync(self, handle: bytes) -> int:
        return self._send(_SFTP.CMD_EXTENDED, _FSYNC, handle)

    def send_close(self, handle: bytes) -> int:
        return self._send(_SFTP.CMD_CLOSE, handle)

    def send_rename(self, old: str, new: str) -> int:
        return self._send(_SFTP.CMD_EXTENDED, _POSIX_RENAME, _abs(old), _abs(new))

    def send_remove(self, path: str) -> int:
        return self._send(_SFTP.CMD_REMOVE, _abs(path))

    def _wait(self, number: int) -> tuple[int, Any]:
        table = self._responses.by_number
        while number not in table:
            self._sftp._read_response()
        return table.pop(number)

    def wait_status(self, number: int) -> None:
        kind, msg = self._wait(number)
        if kind != _SFTP.CMD_STATUS:
            raise paramiko.SSHException(f"expected an sftp status, got packet type {kind}")
        self._sftp._convert_status(msg)

    def wait_handle(self, number: int) -> bytes:
        kind, msg = self._wait(number)
        if kind == _SFTP.CMD_STATUS:
            self._sftp._convert_status(msg)
        if kind != _SFTP.CMD_HANDLE:
            raise paramiko.SSHException(f"expected an sftp handle, got packet type {kind}")
        return bytes(msg.get_binary())

    def kind_of(self, path: str) -> EntryKind | None:
        try:
            return _kind_of(self._sftp.lstat(_abs(path)).st_mode)
        except OSError as error:
            if error.errno == errno.ENOENT:
                return None
            raise

    def discard(self, handle: bytes | None, path: str) -> None:
        if not self._conn.alive():
            return  # the next attempt for this final name removes the leftover
        with suppress(OSError, EOFError, paramiko.SSHException):
            numbers = [self.send_close(handle)] if handle is not None else []
            numbers.append(self.send_remove(path))
            for number in numbers:
                with suppress(OSError):
                    self.wait_status(number)

    def guard(self, action: str, path: str) -> AbstractContextManager[None]:
        return self._owner._classified(action, path)

    def classify(self, error: Exception, action: str, path: str) -> TransportError:
        translated = self._owner._classify(error, action, path)
        if translated.transient:
            self._owner.close()
        return translated
