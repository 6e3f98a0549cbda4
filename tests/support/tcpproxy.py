"""A loopback TCP proxy for network faults: cut after N bytes, stall, throttle, go down.

Rules:

1. Listens on 127.0.0.1 on a free port and forwards every connection to one target; threads
   only, no event loop, so tests stay synchronous.
2. ``upstream_total`` counts client-to-server bytes over every connection since the proxy
   started; :meth:`TcpProxy.cut_at` arms a one-shot cut at an absolute value of that counter,
   so a test can connect first, read the counter and cut k bytes into the next transfer.
   A cut forwards exactly up to the offset, then resets both sides (RST, like a dropped link).
3. :meth:`TcpProxy.stall` stops forwarding in both directions without closing anything (a
   hung middlebox); :meth:`TcpProxy.throttle` limits both directions to a byte rate.
4. :meth:`TcpProxy.down` closes the listener so connects are refused; :meth:`TcpProxy.up`
   listens again on the same port. Always :meth:`TcpProxy.close` (or use ``with``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType

_CHUNK = 65536
_POLL = 0.05


class TcpProxy:
    """See the module docstring."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.upstream_total = 0
        self.connections = 0
        self._cut_at: int | None = None
        self._stalled = threading.Event()
        self._rate: float | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self.up()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    # -- controls ----------------------------------------------------------------------------

    def cut_at(self, upstream_offset: int | None) -> None:
        """Reset the connection once ``upstream_total`` reaches this value (one shot)."""
        with self._lock:
            self._cut_at = upstream_offset

    def stall(self, stalled: bool = True) -> None:
        """Stop (or resume) forwarding without closing the connections."""
        if stalled:
            self._stalled.set()
        else:
            self._stalled.clear()

    def throttle(self, bytes_per_second: float | None) -> None:
        """Limit forwarding to about this rate per direction; None removes the limit."""
        self._rate = bytes_per_second

    def down(self) -> None:
        """Stop listening (connects are refused) and reset every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._reset_all()

    def up(self) -> None:
        """Listen again (on the same port after a :meth:`down`)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(_POLL)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept_loop, listener)

    def close(self) -> None:
        """Stop everything and join the threads."""
        self._closed.set()
        self.down()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- machinery ---------------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._closed.is_set() and self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
            self._spawn(self._pump, client, server, True)
            self._spawn(self._pump, server, client, False)

    def _reset_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _reset(sock)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while not self._closed.is_set():
                if self._stalled.is_set():
                    time.sleep(_POLL)
                    continue
                readable, _, _ = select.select([src], [], [], _POLL)
                if not readable:
                    continue
                data = src.recv(_CHUNK if self._rate is None else max(1, int(self._rate / 20)))
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if upstream and self._forward_until_cut(data, dst):
                    return
                if not upstream:
                    dst.sendall(data)
                if self._rate is not None:
                    time.sleep(len(data) / self._rate)
        except (OSError, ValueError):
            # ValueError: select on a socket another pump already closed after a cut.
            _reset(src)
            _reset(dst)

    def _forward_until_cut(self, data: bytes, dst: socket.socket) -> bool:
        """Forward client bytes; True if the armed cut fired (and both sides were reset)."""
        with self._lock:
            cut = self._cut_at
            start = self.upstream_total
            if cut is not None and start + len(data) >= cut:
                data = data[: max(0, cut - start)]
                self._cut_at = None
                fire = True
            else:
                fire = False
            self.upstream_total += len(data)
        if data:
            dst.sendall(data)
        if fire:
            self._reset_all()
        return fire


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send RST: the peer sees a reset, not a FIN.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
