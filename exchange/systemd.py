"""The sd_notify protocol: tell systemd we are ready, alive, stopping, and what we are doing.

Rules:

1. Standard library only: one ``AF_UNIX``/``SOCK_DGRAM`` datagram per message to the path in
   ``$NOTIFY_SOCKET`` (``sd_notify(3)``). A leading ``@`` names a socket in the abstract
   namespace and becomes a NUL byte. Nothing else is supported (no ``vsock:``), and an
   unsupported address is treated like no socket at all.
2. Without ``$NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call is a no-op, so
   the daemon calls the notifier unconditionally and never branches on "am I under systemd".
3. A failed send never stops the daemon: systemd going away is not our failure to handle.
   The socket is non-blocking, so a full receive queue cannot stall the caller either.
   ``send`` returns whether the datagram went out, which tests and logs may use.
4. The environment is read once, at construction, and passed in (tests give their own); the
   variables are not unset, because nothing here forks children that could misuse them.
5. WATCHDOG=1 is the caller's statement that the whole daemon is healthy. This module does
   not judge health; the daemon sends it only after its own checks pass, so a dead watcher
   or scheduler thread makes systemd restart the service once ``WatchdogSec`` runs out.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Notifier", "notify_address", "watchdog_interval"]


def notify_address(environ: Mapping[str, str]) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET`` in the form :mod:`socket` takes, or None.

    ``@name`` becomes ``"\\0name"`` (the abstract namespace); an absolute path is kept; any other
    form (relative path, ``vsock:``) is unsupported and yields None.
    """
    value = environ.get("NOTIFY_SOCKET", "")
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], *, pid: int | None = None) -> float | None:
    """How often to send WATCHDOG=1, in seconds: half of ``$WATCHDOG_USEC`` (the margin
    ``sd_watchdog_enabled(3)`` recommends), or None when no watchdog is asked of this process.

    ``$WATCHDOG_PID``, when set, must be our pid (``pid`` defaults to :func:`os.getpid`);
    a value that is missing, not a positive integer, or meant for another process gives None.
    """
    usec_text = environ.get("WATCHDOG_USEC", "")
    if not usec_text.isdigit() or int(usec_text) <= 0:
        return None
    pid_text = environ.get("WATCHDOG_PID")
    if pid_text is not None and (
        not pid_text.isdigit() or int(pid_text) != (os.getpid() if pid is None else pid)
    ):
        return None
    return int(usec_text) / 1_000_000 / 2


@dataclass(frozen=True, slots=True)
class Notifier:
    """Sends sd_notify messages to ``address``; a no-op when ``address`` is None."""

    address: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET`` (``os.environ`` unless ``environ`` is given)."""
        return cls(notify_address(os.environ if environ is None else environ))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; True when it was sent."""
        if self.address is None or not assignments:
            return False
        for line in assignments:
            # A newline inside a value would forge another assignment (e.g. a STATUS text
            # carrying "\nREADY=1"), so values are single-line by construction.
            if "\n" in line or "=" not in line:
                raise ValueError(f"sd_notify: not a single KEY=value line: {line!r}")
        payload = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(payload, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: start-up is done (``Type=notify`` units become active only now)."""
        return self.send("READY=1", *_status(status))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the daemon checked itself and is healthy."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: a graceful stop has begun."""
        return self.send("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """STATUS=: one line shown by ``systemctl status``."""
        return self.send(*_status(text))


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # systemctl shows one line; flattening here keeps the caller's text from being refused.
    return ("STATUS=" + " ".join(text.split()),)
