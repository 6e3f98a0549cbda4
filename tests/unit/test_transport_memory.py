"""MemoryTransport: the shared contract, plus the faults tests inject through it."""

from __future__ import annotations

import io

import pytest

from exchange.errors import PermanentTransportError, TransientTransportError
from exchange.transport.memory import MemoryFaults, MemoryHub, MemoryTransport
from exchange.transport.port import EntryKind, UnsupportedServerError, part_name
from tests.contract.transport_contract import FINAL, FOLDER, NAME, TransportContract


class MemoryView:
    """Server-side view of FOLDER in a MemoryHub."""

    def __init__(self, hub: MemoryHub) -> None:
        self.hub = hub

    def files(self) -> dict[str, bytes]:
        prefix = FOLDER + "/"
        return {
            path[len(prefix) :]: data
            for path, data in self.hub.files.items()
            if path.startswith(prefix) and "/" not in path[len(prefix) :]
        }

    def plant(self, name: str, data: bytes) -> None:
        self.hub.files[f"{FOLDER}/{name}"] = data

    def plant_symlink(self, name: str, target: str) -> None:
        self.hub.specials[f"{FOLDER}/{name}"] = EntryKind.SYMLINK

    def plant_dir(self, name: str) -> None:
        self.hub.mkdirs(f"{FOLDER}/{name}")

    def plant_raw_name(self, raw: bytes, data: bytes) -> None:
        self.hub.raw_names.setdefault(FOLDER, []).append(raw)


@pytest.fixture(name="hub")
def fixture_hub() -> MemoryHub:
    """A fake hub holding the partner folders of southend-uhft and essex-police."""
    hub = MemoryHub()
    for partner in ("southend-uhft", "essex-police"):
        for folder in ("inbox", "outbox", "receipts"):
            hub.mkdirs(f"{partner}/{folder}")
    return hub


@pytest.fixture(name="faults")
def fixture_faults() -> MemoryFaults:
    """No faults until a test sets one."""
    return MemoryFaults()


@pytest.fixture(name="transport")
def fixture_transport(hub: MemoryHub, faults: MemoryFaults) -> MemoryTransport:
    """A MemoryTransport over the fake hub."""
    return MemoryTransport(hub, faults)


@pytest.fixture(name="remote")
def fixture_remote(hub: MemoryHub) -> MemoryView:
    """Server-side access to the contract's folder."""
    return MemoryView(hub)


class TestMemoryContract(TransportContract):
    """The fake passes the same suite as the SFTP client on a real sshd."""


class TestFaults:
    """Faults injected into the fake show the failure modes callers must handle."""

    @pytest.mark.parametrize("cut", [0, 1, 65_536, 999_999])
    def test_cut_mid_upload_leaves_no_final_then_retry_completes(
        self, transport: MemoryTransport, faults: MemoryFaults, remote: MemoryView, cut: int
    ) -> None:
        """A connection cut at any offset is transient, leaves only a temporary, and the
        retry leaves exactly one final file."""
        data = b"z" * 1_000_000
        faults.cut_after_bytes = cut

        with pytest.raises(TransientTransportError):
            transport.put_atomic(io.BytesIO(data), FINAL)
        assert NAME not in remote.files()

        transport.put_atomic(io.BytesIO(data), FINAL)
        assert {NAME: data} == remote.files()

    def test_hub_down_then_up(self, transport: MemoryTransport, faults: MemoryFaults) -> None:
        """Refused connections are transient; once the hub is back the call succeeds."""
        faults.refuse_connects = 2

        for _ in range(2):
            with pytest.raises(TransientTransportError):
                transport.list(FOLDER)
        assert transport.list(FOLDER).entries == ()

    def test_disk_full_is_permanent_and_cleaned(
        self, transport: MemoryTransport, faults: MemoryFaults, remote: MemoryView
    ) -> None:
        """A full hub disk is a permanent error and leaves neither final nor temporary."""
        faults.disk_full = True

        with pytest.raises(PermanentTransportError) as caught:
            transport.put_atomic(io.BytesIO(b"data"), FINAL)
        assert not caught.value.transient
        assert remote.files() == {}

    def test_server_without_posix_rename_is_refused(
        self, transport: MemoryTransport, faults: MemoryFaults, remote: MemoryView
    ) -> None:
        """A hub without posix-rename is refused before anything is written."""
        faults.no_posix_rename = True

        with pytest.raises(UnsupportedServerError):
            transport.put_atomic(io.BytesIO(b"data"), FINAL)
        assert remote.files() == {}

    def test_permission_denied_is_permanent(
        self, transport: MemoryTransport, faults: MemoryFaults
    ) -> None:
        """Permission denied is permanent, for writes and reads alike."""
        faults.permission_denied = True

        with pytest.raises(PermanentTransportError):
            transport.put_atomic(io.BytesIO(b"data"), FINAL)
        with pytest.raises(PermanentTransportError):
            transport.list(FOLDER)

    def test_temporary_name_is_hidden_and_deterministic(self) -> None:
        """The temporary name is a dot-file beside the final one, the same on every attempt."""
        first, second = part_name(FINAL), part_name(FINAL)

        assert first == second
        assert first.startswith(f"{FOLDER}/.{NAME}.")
        assert first.endswith(".part")
