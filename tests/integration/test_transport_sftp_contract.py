"""SftpTransport on a real OpenSSH hub passes the same contract as the in-memory fake."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.transport import SftpSettings, SftpTransport
from tests.contract.transport_contract import FOLDER, TransportContract
from tests.support.sshd import Hub

pytestmark = pytest.mark.integration


class HubView:
    """Server-side view of FOLDER: the hub's real directory, written as root."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def files(self) -> dict[str, bytes]:
        return {
            entry.name: Path(entry.path).read_bytes()
            for entry in os.scandir(self.directory)
            if entry.is_file(follow_symlinks=False)
        }

    def plant(self, name: str, data: bytes) -> None:
        path = self.directory / name
        path.write_bytes(data)
        path.chmod(0o644)

    def plant_symlink(self, name: str, target: str) -> None:
        (self.directory / name).symlink_to(target)

    def plant_dir(self, name: str) -> None:
        (self.directory / name).mkdir()

    def plant_raw_name(self, raw: bytes, data: bytes) -> None:
        path = os.path.join(os.fsencode(self.directory), raw)
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, 0o644)


def settings_for(hub: Hub, login: str, **overrides: object) -> SftpSettings:
    """Client settings for one hub login, pinned to the hub's host keys."""
    key, _ = hub.login(login)
    values: dict[str, object] = {
        "host": hub.host,
        "port": hub.port,
        "login": login,
        "key_path": key,
        "host_keys": tuple(hub.host_public_keys),
        "connect_timeout": 5.0,
        "io_timeout": 10.0,
    }
    values.update(overrides)
    return SftpSettings(**values)  # type: ignore[arg-type]


def _empty(directory: Path) -> None:
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


@pytest.fixture(name="remote")
def fixture_remote(hub_module: Hub) -> HubView:
    """The daemon's delivery folder for southend-uhft, emptied before each test."""
    partner, folder = FOLDER.split("/")
    directory = hub_module.partner_dir(partner) / folder
    _empty(directory)
    return HubView(directory)


@pytest.fixture(name="transport")
def fixture_transport(hub_module: Hub, remote: HubView) -> Iterator[SftpTransport]:
    """The organisation's daemon login (essex-cc) on the shared hub."""
    with SftpTransport(settings_for(hub_module, "essex-cc")) as transport:
        yield transport


class TestSftpContract(TransportContract):
    """The SFTP client behaves exactly as the contract (and so the fake) says."""
