"""exchange.systemd: sd_notify datagrams received on a real AF_UNIX socket the test owns."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.systemd import Notifier, notify_address, watchdog_interval


@pytest.fixture(name="receiver")
def fixture_receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a path, standing in for systemd's notify socket."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def _received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode("utf-8").split("\n")


def test_ready_watchdog_stopping_status_arrive_as_datagrams(
    receiver: tuple[socket.socket, str],
) -> None:
    """Each call sends one datagram of KEY=value lines to the path in NOTIFY_SOCKET."""
    sock, path = receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("watching 2 outboxes")
    assert ["READY=1", "STATUS=watching 2 outboxes"] == _received(sock)
    assert notifier.watchdog()
    assert ["WATCHDOG=1"] == _received(sock)
    assert notifier.status("delivering")
    assert ["STATUS=delivering"] == _received(sock)
    assert notifier.stopping()
    assert ["STOPPING=1"] == _received(sock)


def test_abstract_namespace_address_is_used() -> None:
    """An '@name' NOTIFY_SOCKET reaches a socket bound in the abstract namespace."""
    name = f"exchange-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}).ready()
        assert ["READY=1"] == _received(sock)


def test_status_text_cannot_smuggle_another_assignment(
    receiver: tuple[socket.socket, str],
) -> None:
    """A newline in a status text is flattened, so it cannot forge READY=1 or WATCHDOG=1."""
    sock, path = receiver
    Notifier(path).status("partner down\nWATCHDOG=1")
    assert ["STATUS=partner down WATCHDOG=1"] == _received(sock)
    with pytest.raises(ValueError, match="single KEY=value"):
        Notifier(path).send("READY=1\nWATCHDOG=1")


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    """Outside systemd nothing is sent and nothing fails."""
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert (False, False, False, False) == (
        notifier.ready(),
        notifier.watchdog(),
        notifier.stopping(),
        notifier.status("x"),
    )


def test_unreachable_socket_is_reported_not_raised(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET path with nobody listening makes send return False, never raise."""
    assert not Notifier(str(tmp_path / "gone")).watchdog()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@sd-notify", "\0sd-notify"),
        ("@", None),
        ("", None),
        ("relative/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_notify_address_forms(value: str, expected: str | None) -> None:
    """Absolute paths and '@' abstract names are understood; other forms are unsupported."""
    assert expected == notify_address({"NOTIFY_SOCKET": value})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_pid(
    environ: dict[str, str], expected: float | None
) -> None:
    """WATCHDOG_USEC gives half its value in seconds, only when WATCHDOG_PID is absent or ours."""
    assert expected == watchdog_interval(environ, pid=4242)


def test_watchdog_interval_defaults_to_our_own_pid() -> None:
    """Without an explicit pid the check is against os.getpid()."""
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert 1.0 == watchdog_interval(environ)
