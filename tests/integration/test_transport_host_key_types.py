"""Security review L2: every host key type ``exchange config check`` accepts as a pin
(``signing.SSH_HOST_KEY_TYPES``) is one the SFTP transport connects with, against a real sshd
that offers only that key type."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from exchange import signing
from exchange.errors import ConfigError, HostKeyError
from exchange.hubconfig import SSHD
from exchange.transport.pins import ACCEPTED_TYPES, parse_pin
from exchange.transport.sftp import SftpTransport
from tests.integration.test_transport_sftp_contract import settings_for
from tests.support.sshd import Hub

#: ssh-keygen arguments for each pinnable type, and the host key algorithms sshd may use.
_KEYGEN: dict[str, tuple[list[str], str]] = {
    "ecdsa-sha2-nistp384": (["-t", "ecdsa", "-b", "384"], "ecdsa-sha2-nistp384"),
    "ecdsa-sha2-nistp521": (["-t", "ecdsa", "-b", "521"], "ecdsa-sha2-nistp521"),
    "ssh-rsa": (["-t", "rsa", "-b", "3072"], "rsa-sha2-512,rsa-sha2-256"),
}


def _host_key(folder: Path, key_type: str) -> tuple[Path, str]:
    args, _ = _KEYGEN[key_type]
    path = folder / f"host-{key_type}"
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-f", str(path), *args], check=True, capture_output=True
    )
    path.chmod(0o600)
    line = " ".join(path.with_suffix(".pub").read_text(encoding="ascii").split()[:2])
    return path, line


@contextmanager
def _restart_with_key(hub: Hub, key: Path, algorithms: str) -> Iterator[None]:
    """Replace the hub's sshd by one on the same port and config that offers only ``key``."""
    hub.stop()
    start = len(hub.log_text())
    argv = [str(SSHD), "-D", "-e", "-f", str(hub.config_path), "-h", str(key)]
    argv += ["-o", f"HostKeyAlgorithms={algorithms}"]
    with hub.log_path.open("ab") as log:
        hub.process = subprocess.Popen(argv, stderr=log, stdout=log)
    deadline = time.monotonic() + 10
    while "Server listening" not in hub.log_text()[start:]:
        if time.monotonic() > deadline or hub.process.poll() is not None:
            raise AssertionError(hub.log_text()[-2000:])
        time.sleep(0.05)
    try:
        yield
    finally:
        hub.stop()


def test_pins_accept_what_config_check_accepts() -> None:
    """The transport's pinnable types are exactly the host key types config check allows."""
    assert set(ACCEPTED_TYPES) == set(signing.SSH_HOST_KEY_TYPES)


def test_short_rsa_pin_is_refused(tmp_path: Path) -> None:
    """An RSA pin under 3072 bits is a configuration error in the transport as in config check."""
    path = tmp_path / "rsa2048"
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-t", "rsa", "-b", "2048", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    line = path.with_suffix(".pub").read_text(encoding="ascii")
    with pytest.raises(signing.KeyRejected):
        signing.parse_ssh_public_key(line, host_key=True)
    with pytest.raises(ConfigError, match="below 3072 bits"):
        parse_pin(line)


@pytest.mark.integration
@pytest.mark.parametrize("key_type", sorted(_KEYGEN))
def test_connects_with_a_pinned_key_of_each_type(tmp_path: Path, hub: Hub, key_type: str) -> None:
    """A hub offering only an ECDSA P-384/P-521 or RSA-3072 host key is reached when that key
    is pinned (and config check accepts the pin), and refused when only another key is."""
    key, line = _host_key(tmp_path, key_type)
    assert signing.parse_ssh_public_key(line, host_key=True).key_type == key_type
    with _restart_with_key(hub, key, _KEYGEN[key_type][1]):
        transport = SftpTransport(settings_for(hub, "essex-cc", host_keys=(line,)))
        try:
            assert transport.list("southend-uhft/inbox").entries == ()
            assert transport.negotiated()["host_key_type"] in _KEYGEN[key_type][1].split(",")
        finally:
            transport.close()
        other = SftpTransport(settings_for(hub, "essex-cc", host_keys=(hub.host_public_keys[0],)))
        try:
            with pytest.raises(HostKeyError):
                other.list("southend-uhft/inbox")
        finally:
            other.close()
