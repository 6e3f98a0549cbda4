"""Pure parts of the transport: remote path checks, listing decisions, pins, SFTP extensions."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable

import pytest

from exchange.core.naming import DeliveryNames, Folder, delivery_id_from_hex, read_name
from exchange.core.naming import temp_name as naming_temp_name
from exchange.errors import ConfigError
from exchange.transport import UnsupportedServerError
from exchange.transport.pins import fingerprint, matches, parse_pin, parse_pins
from exchange.transport.port import (
    EntryKind,
    RefusalReason,
    RefusedEntry,
    RemotePathError,
    check_remote_path,
    classify_listed_name,
    is_part_name,
    part_name,
)
from exchange.transport.sftp import _parse_extensions as parse_extensions
from exchange.transport.sftp import server_info

ED25519_BLOB = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes(range(32))
ED25519_LINE = "ssh-ed25519 " + base64.b64encode(ED25519_BLOB).decode() + " hub@essex.example"


class TestRemotePaths:
    """Remote paths are checked before any request is sent."""

    def test_good_path_splits_into_components(self) -> None:
        """A hub path of safe components is accepted and split."""
        assert check_remote_path("southend-uhft/inbox/a.age") == ("southend-uhft", "inbox", "a.age")

    @pytest.mark.parametrize(
        "path",
        ["", "/abs", "a//b", "a/./b", "a/../b", "..", "a/b/", "a\x00b", "a/\u202eb", "a/b c"],
    )
    def test_bad_paths_are_refused(self, path: str) -> None:
        """Empty, absolute, traversal, empty components and non-ASCII tricks are refused."""
        with pytest.raises(RemotePathError):
            check_remote_path(path)

    def test_too_many_components_refused(self) -> None:
        """Deep paths (the long-path probe) are refused."""
        with pytest.raises(RemotePathError):
            check_remote_path("/".join(["a"] * 9))

    def test_temporary_names_allowed_only_when_asked(self) -> None:
        """A temporary name is a valid path only for operations that clean up."""
        temp = part_name("p/inbox/x.age")
        with pytest.raises(RemotePathError):
            check_remote_path(temp)
        assert check_remote_path(temp, allow_temporary=True)[-1] == temp.rpartition("/")[2]
        assert is_part_name(temp.rpartition("/")[2])


class TestListedNames:
    """Each raw name from a hub listing is either usable, skipped, or refused with a reason."""

    def test_valid_regular_name_is_usable(self) -> None:
        """A regular file whose name passes the validator is returned as is."""
        assert classify_listed_name(b"a.age", EntryKind.REGULAR, None) == ("a.age", None)

    @pytest.mark.parametrize("raw", [b".", b"..", b"." + part_name("a.age").encode()[1:]])
    def test_dots_and_temporaries_are_skipped(self, raw: bytes) -> None:
        """Dot entries and our own temporaries are neither usable nor refused."""
        assert classify_listed_name(raw, EntryKind.REGULAR, None) == (None, None)

    def test_only_temporaries_of_allowed_names_are_skipped(self) -> None:
        """A temporary name is skipped only for a regular file: with a validator, for a final
        name it allows (any 16-hex token, FORMAT.md §6.1); without one, only exactly our own
        name. Look-alikes and non-regular entries are refused (review L4)."""
        ours = part_name("a.age")
        foreign_token = ".a.age.0123456789abcdef.part"
        allows_age: Callable[[str], bool] = lambda n: n.endswith(".age")  # noqa: E731
        assert is_part_name(ours)
        assert not is_part_name(foreign_token)
        assert classify_listed_name(foreign_token.encode(), EntryKind.REGULAR, None) == (
            None,
            RefusedEntry(foreign_token, EntryKind.REGULAR, RefusalReason.BAD_NAME),
        )
        assert classify_listed_name(foreign_token.encode(), EntryKind.REGULAR, allows_age) == (
            None,
            None,
        )
        hidden = ".notes.txt.0123456789abcdef.part"
        assert classify_listed_name(hidden.encode(), EntryKind.REGULAR, allows_age) == (
            None,
            RefusedEntry(hidden, EntryKind.REGULAR, RefusalReason.BAD_NAME),
        )
        for kind in (EntryKind.DIRECTORY, EntryKind.SYMLINK, EntryKind.OTHER):
            assert classify_listed_name(ours.encode(), kind, allows_age) == (
                None,
                RefusedEntry(ours, kind, RefusalReason.NOT_REGULAR),
            )

    @pytest.mark.parametrize(
        ("raw", "kind", "reason"),
        [
            (b"\xff.age", EntryKind.REGULAR, RefusalReason.UNDECODABLE),
            (b"evil.txt", EntryKind.REGULAR, RefusalReason.BAD_NAME),
            (b"a\nb.age", EntryKind.REGULAR, RefusalReason.BAD_NAME),
            (b"link.age", EntryKind.SYMLINK, RefusalReason.NOT_REGULAR),
            (b"fifo.age", EntryKind.OTHER, RefusalReason.NOT_REGULAR),
        ],
    )
    def test_hostile_entries_are_refused(
        self, raw: bytes, kind: EntryKind, reason: RefusalReason
    ) -> None:
        """Bad names, undecodable names and non-regular entries are refused, escaped."""
        name, refusal = classify_listed_name(raw, kind, lambda n: n.endswith(".age"))

        assert name is None
        assert refusal is not None
        assert refusal.reason is reason
        assert refusal.name.isprintable()


class TestPins:
    """Pinned host keys are parsed strictly and compared in full."""

    def test_parse_and_match(self) -> None:
        """A key line parses and matches exactly its own blob."""
        pin = parse_pin(ED25519_LINE)

        assert matches((pin,), "ssh-ed25519", ED25519_BLOB)
        assert not matches((pin,), "ssh-ed25519", ED25519_BLOB[:-1] + b"\x00")
        assert pin.fingerprint == fingerprint(ED25519_BLOB)
        assert pin.fingerprint.startswith("SHA256:")
        assert not pin.fingerprint.endswith("=")

    @pytest.mark.parametrize(
        "line",
        [
            "ssh-ed25519",
            "ssh-rsa AAAAB3NzaC1yc2E=",
            "ssh-ed25519 not*base64",
            "ecdsa-sha2-nistp256 " + base64.b64encode(ED25519_BLOB).decode(),
        ],
    )
    def test_bad_pins_are_config_errors(self, line: str) -> None:
        """Missing blobs, unaccepted types, bad base64 and mismatched types are refused."""
        with pytest.raises(ConfigError):
            parse_pin(line)

    def test_no_pins_is_a_config_error(self) -> None:
        """An empty pin list never means 'accept anything'."""
        with pytest.raises(ConfigError):
            parse_pins([])


def _version_reply(*pairs: tuple[bytes, bytes]) -> bytes:
    out = struct.pack(">I", 3)
    for name, data in pairs:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(data)) + data
    return out


class _StubSftp:
    """Only what server_info reads: the parsed extension table."""

    def __init__(self, extensions: dict[str, bytes]) -> None:
        self.extensions = extensions


class TestServerExtensions:
    """The SFTP version reply's extensions decide whether the hub is usable."""

    def test_extensions_are_parsed(self) -> None:
        """Name/data pairs after the version are read; a truncated tail is ignored."""
        data = _version_reply((b"posix-rename@openssh.com", b"1"), (b"fsync@openssh.com", b"1"))

        assert parse_extensions(data + b"\x00\x00") == {
            "posix-rename@openssh.com": b"1",
            "fsync@openssh.com": b"1",
        }

    def test_server_without_posix_rename_is_refused(self) -> None:
        """Without posix-rename the connection is refused: no non-atomic fallback."""
        with pytest.raises(UnsupportedServerError) as caught:
            server_info(_StubSftp({"fsync@openssh.com": b"1"}), "hub h:22", 1 << 20)
        assert not caught.value.transient

    def test_without_limits_requests_stay_small(self) -> None:
        """A server that does not state its limits gets 32 KiB requests, which all accept."""
        info = server_info(_StubSftp({"posix-rename@openssh.com": b"1"}), "hub h:22", 1 << 20)

        assert (info.read_size, info.write_size) == (32 * 1024, 32 * 1024)


class TestNamingScheme:
    """The transport's names agree with exchange.core.naming, which validates names read back."""

    def test_temporary_name_is_recognised_by_naming(self) -> None:
        """The temporary name of a hub final name is read back by naming as that file's
        temporary, with the same final name."""
        names = DeliveryNames.for_delivery(delivery_id_from_hex("ab" * 16))
        temp = part_name(f"southend-uhft/inbox/{names.payload}").rpartition("/")[2]

        hub_file = read_name(Folder.INBOX, temp)

        assert hub_file is not None
        assert (hub_file.temporary, hub_file.final_name) == (True, names.payload)
        assert temp == naming_temp_name(names.payload, temp.split(".")[-2])

    def test_naming_validator_plugs_into_listing_decisions(self) -> None:
        """naming.read_name works as the listing validator: receipts pass in receipts/,
        payloads do not."""
        names = DeliveryNames.for_delivery(delivery_id_from_hex("cd" * 16))

        def receipts_only(name: str) -> bool:
            return read_name(Folder.RECEIPTS, name) is not None

        usable, _ = classify_listed_name(names.receipt.encode(), EntryKind.REGULAR, receipts_only)
        _, refusal = classify_listed_name(names.payload.encode(), EntryKind.REGULAR, receipts_only)

        assert usable == names.receipt
        assert refusal is not None and refusal.reason is RefusalReason.BAD_NAME
