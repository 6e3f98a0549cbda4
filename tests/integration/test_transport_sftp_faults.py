"""SftpTransport against a real hub under faults: host keys, cuts, outages, stalls, isolation."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.errors import HostKeyError, PermanentTransportError, TransientTransportError
from exchange.transport import (
    Backoff,
    RemoteNotFoundError,
    RemotePathError,
    RetryingTransport,
    SftpTransport,
)
from exchange.transport.port import EntryKind
from tests.integration.test_transport_sftp_contract import settings_for
from tests.support.sshd import Hub
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

NAME = "00112233445566778899aabbccddeeff.age"
FINAL = f"southend-uhft/inbox/{NAME}"


def inbox(hub: Hub) -> Path:
    """The real southend-uhft/inbox folder on the hub."""
    return hub.partner_dir("southend-uhft") / "inbox"


def other_key_line(tmp_path: Path, key_type: str = "ed25519") -> str:
    """A freshly generated host public key line that the hub does not hold."""
    path = tmp_path / f"not-the-hub-{key_type}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture(name="proxy")
def fixture_proxy(hub: Hub) -> Iterator[TcpProxy]:
    """A fault-injecting TCP proxy in front of the hub."""
    with TcpProxy((hub.host, hub.port)) as proxy:
        yield proxy


def via(proxy: TcpProxy, hub: Hub, **overrides: object) -> SftpTransport:
    """The daemon login, connecting through the proxy."""
    return SftpTransport(
        settings_for(hub, "essex-cc", host=proxy.address[0], port=proxy.port, **overrides)
    )


def test_partner_pulls_exact_bytes_with_stock_sftp(hub: Hub, tmp_path: Path) -> None:
    """An upload by the daemon is fetched byte-for-byte by the partner with stock sftp."""
    data = os.urandom(2_500_001)
    with SftpTransport(settings_for(hub, "essex-cc")) as transport:
        transport.put_atomic(io.BytesIO(data), FINAL, expected_size=len(data))
    hub.normalise()
    target = tmp_path / "pulled.age"

    result = hub.sftp_batch("southend-uhft", f"get /inbox/{NAME} {target}\n")

    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data


@pytest.mark.parametrize("pin", ["unknown", "changed"])
def test_unpinned_host_key_is_refused_before_auth(hub: Hub, tmp_path: Path, pin: str) -> None:
    """An unknown or changed host key raises HostKeyError; nothing is uploaded and the client
    never authenticates."""
    other = other_key_line(tmp_path)
    pins = (other,) if pin == "unknown" else (other, other_key_line(tmp_path, "ecdsa"))
    transport = SftpTransport(settings_for(hub, "essex-cc", host_keys=pins))

    with pytest.raises(HostKeyError) as caught:
        transport.put_atomic(io.BytesIO(b"secret"), FINAL)

    assert "not pinned" in caught.value.message
    assert not caught.value.transient
    assert list(inbox(hub).iterdir()) == []
    assert "Accepted publickey" not in hub.log_text()


def test_host_key_of_unpinned_type_is_refused(hub: Hub, tmp_path: Path) -> None:
    """Pinning only an ECDSA key against an Ed25519-only hub is a host key error, not a
    negotiation quirk."""
    transport = SftpTransport(
        settings_for(hub, "essex-cc", host_keys=(other_key_line(tmp_path, "ecdsa"),))
    )

    with pytest.raises(HostKeyError):
        transport.list("southend-uhft/inbox")
    assert "Accepted publickey" not in hub.log_text()


def test_wrong_client_key_is_permanent(hub: Hub) -> None:
    """Authenticating with another login's key is a permanent error, not retried."""
    key, _ = hub.login("southend-uhft")
    transport = SftpTransport(settings_for(hub, "essex-police", key_path=key))

    with pytest.raises(PermanentTransportError) as caught:
        transport.list("inbox")
    assert "authentication failed" in caught.value.message


@pytest.mark.parametrize("offset", [1, 40_000, 700_000, 2_900_000])
def test_cut_mid_upload_leaves_no_final_and_retry_leaves_one(
    hub: Hub, proxy: TcpProxy, offset: int
) -> None:
    """A connection reset k bytes into an upload is transient, leaves no final-named file,
    and the retry completes with exactly one file."""
    data = os.urandom(3_000_000)
    transport = via(proxy, hub)
    transport.list("southend-uhft/inbox")  # connect and authenticate first
    proxy.cut_at(proxy.upstream_total + offset)

    with pytest.raises(TransientTransportError):
        transport.put_atomic(io.BytesIO(data), FINAL)
    assert NAME not in os.listdir(inbox(hub))

    transport.put_atomic(io.BytesIO(data), FINAL)
    transport.close()
    names = os.listdir(inbox(hub))
    assert names == [NAME]
    assert (inbox(hub) / NAME).read_bytes() == data


def test_hub_down_then_up_retries_to_success(hub: Hub, proxy: TcpProxy) -> None:
    """While the hub is unreachable attempts fail as transient; the retrying wrapper succeeds
    once it is back, without really sleeping."""
    proxy.down()
    errors: list[str] = []

    def sleep(_seconds: float) -> None:
        if len(errors) == 2:
            proxy.up()

    retrying = RetryingTransport(
        via(proxy, hub),
        Backoff(base=1, cap=4, attempts=5),
        sleep=sleep,
        unit_random=lambda: 0.5,
        on_retry=lambda _n, _delay, error: errors.append(type(error).__name__),
    )

    result = retrying.put_atomic(io.BytesIO(b"payload"), FINAL)

    assert errors == ["TransientTransportError", "TransientTransportError"]
    assert result.size == 7
    assert (inbox(hub) / NAME).read_bytes() == b"payload"


def test_stalled_hub_times_out_as_transient(hub: Hub, proxy: TcpProxy) -> None:
    """A hub that stops answering mid-transfer fails within the configured timeout."""
    transport = via(proxy, hub, io_timeout=2.0)
    transport.list("southend-uhft/inbox")
    proxy.stall()
    started = time.monotonic()

    with pytest.raises(TransientTransportError):
        transport.put_atomic(io.BytesIO(os.urandom(8_000_000)), FINAL)

    assert time.monotonic() - started < 10
    assert NAME not in os.listdir(inbox(hub))


def test_stalled_banner_times_out_as_transient(hub: Hub, proxy: TcpProxy) -> None:
    """A hub that accepts TCP but never sends its banner fails within the timeout."""
    proxy.stall()
    transport = via(proxy, hub, io_timeout=2.0)
    started = time.monotonic()

    with pytest.raises(TransientTransportError):
        transport.list("southend-uhft/inbox")

    assert time.monotonic() - started < 10


def test_partner_cannot_reach_another_partner(hub: Hub) -> None:
    """A partner login sees only its own folder through our client: other partners' paths
    are not found, traversal is refused before sending, and its inbox is read-only."""
    (hub.partner_dir("essex-police") / "inbox" / NAME).write_bytes(b"police data")
    with SftpTransport(settings_for(hub, "southend-uhft")) as transport:
        with pytest.raises(RemoteNotFoundError):
            transport.get(f"essex-police/inbox/{NAME}", io.BytesIO(), max_size=100)
        with pytest.raises(RemoteNotFoundError):
            transport.list("essex-police/inbox")
        with pytest.raises(RemotePathError):
            transport.get(f"../essex-police/inbox/{NAME}", io.BytesIO(), max_size=100)
        root = transport.list(".")
        with pytest.raises(PermanentTransportError):
            transport.put_atomic(io.BytesIO(b"x"), f"inbox/{NAME}")

    assert root.entries == ()
    assert {(r.name, r.kind) for r in root.refused} == {
        ("inbox", EntryKind.DIRECTORY),
        ("outbox", EntryKind.DIRECTORY),
        ("receipts", EntryKind.DIRECTORY),
    }


def test_one_connection_is_reused_across_files(hub: Hub) -> None:
    """Several uploads, listings and downloads share one SSH connection."""
    with SftpTransport(settings_for(hub, "essex-cc")) as transport:
        for i in range(5):
            transport.put_atomic(io.BytesIO(b"x" * i), f"southend-uhft/inbox/{i:032x}.age")
        transport.list("southend-uhft/inbox")
        transport.get(f"southend-uhft/inbox/{4:032x}.age", io.BytesIO(), max_size=10)

        assert transport.connects == 1


def test_full_hub_disk_is_permanent_and_leaves_nothing(hub: Hub) -> None:
    """A hub folder that runs out of space fails the upload as permanent, says so, and leaves
    neither a final nor a temporary file (TESTPLAN 26)."""
    folder = inbox(hub)
    before = folder.stat()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        os.chown(folder, before.st_uid, before.st_gid)
        folder.chmod(before.st_mode & 0o7777)
        with SftpTransport(settings_for(hub, "essex-cc")) as transport:
            with pytest.raises(PermanentTransportError) as caught:
                transport.put_atomic(io.BytesIO(os.urandom(3_000_000)), FINAL)
            leftovers = transport.list("southend-uhft/inbox")

        assert "no space left on the hub" in caught.value.message
        assert caught.value.hint is not None and "disk space" in caught.value.hint
        assert os.listdir(folder) == []
        assert (leftovers.entries, leftovers.temporaries) == ((), ())
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_strict_kex_is_negotiated_with_the_hub(hub: Hub) -> None:
    """The hub's OpenSSH negotiates strict key exchange (Terrapin), which the client requires
    by default (TESTPLAN 29)."""
    with SftpTransport(settings_for(hub, "essex-cc")) as transport:
        transport.list("southend-uhft/inbox")

        assert transport.settings.require_strict_kex
        assert transport.negotiated()["strict_kex"] == "yes"
        assert transport.negotiated()["cipher"] == "aes128-gcm@openssh.com"


def test_download_survives_small_requests_and_stalls_time_out(hub: Hub, proxy: TcpProxy) -> None:
    """A download in many small requests returns the exact bytes; a stalled hub mid-download
    fails as transient within the timeout and the next download succeeds."""
    data = os.urandom(5_000_003)
    (inbox(hub) / NAME).write_bytes(data)
    (inbox(hub) / NAME).chmod(0o644)
    transport = via(proxy, hub, io_timeout=2.0, io_size=40_000, read_requests=3)
    out = io.BytesIO()
    assert transport.get(FINAL, out, max_size=len(data)) == len(data)
    assert out.getvalue() == data

    proxy.throttle(500_000)  # 10 s for the file: the stall below lands mid-download
    stall = threading.Timer(0.5, proxy.stall)
    stall.start()
    partial = io.BytesIO()
    started = time.monotonic()
    with pytest.raises(TransientTransportError):
        transport.get(FINAL, partial, max_size=len(data))
    stall.join()
    assert time.monotonic() - started < 10
    assert 0 < len(partial.getvalue()) < len(data)

    proxy.stall(False)
    proxy.throttle(None)
    out = io.BytesIO()
    transport.get(FINAL, out, max_size=len(data))
    assert out.getvalue() == data
    transport.close()
