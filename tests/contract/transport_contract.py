"""One behaviour suite for every Transport: the in-memory fake and the SFTP client on sshd.

A test module subclasses :class:`TransportContract` and provides two fixtures:

- ``transport``: a connected :class:`~exchange.transport.port.Transport` whose folder
  ``FOLDER`` exists and is empty;
- ``remote``: a :class:`RemoteView` that reads and plants entries in that folder directly on
  the server side (as the hub's root would), bypassing the transport under test.

Running the same assertions against both is what lets unit tests trust the fake.
"""

from __future__ import annotations

import io
from typing import ClassVar, Protocol

import pytest

from exchange.errors import PermanentTransportError
from exchange.transport.port import (
    EntryKind,
    RefusalReason,
    RefusedEntry,
    RemoteEntry,
    RemoteNotFoundError,
    RemotePathError,
    RemoteRefusedEntry,
    RemoteTooLargeError,
    SizeMismatchError,
    Transport,
    part_name,
)

FOLDER = "southend-uhft/inbox"
NAME = "0123456789abcdef0123456789abcdef.age"
FINAL = f"{FOLDER}/{NAME}"


class RemoteView(Protocol):
    """Server-side access to ``FOLDER`` for assertions and for planting hostile entries."""

    def files(self) -> dict[str, bytes]:
        """Every regular file in the folder (temporaries included), by name."""
        ...

    def plant(self, name: str, data: bytes) -> None: ...

    def plant_symlink(self, name: str, target: str) -> None: ...

    def plant_dir(self, name: str) -> None: ...

    def plant_raw_name(self, raw: bytes, data: bytes) -> None: ...


def _ours(name: str) -> bool:
    return name.endswith(".age")


class UploadError(Exception):
    """Raised by the tests inside an upload block to simulate the encryptor failing."""


class TransportContract:
    """The behaviours every transport shares."""

    BIG: ClassVar[int] = 1_000_003  # spans several write requests, not a multiple of any

    def test_upload_lands_under_final_name_only(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """An upload leaves exactly the final name holding exactly the bytes sent."""
        data = bytes(range(256)) * (self.BIG // 256)

        result = transport.put_atomic(io.BytesIO(data), FINAL, expected_size=len(data))

        assert (FINAL, len(data)) == (result.remote_path, result.size)
        assert {NAME: data} == remote.files()

    def test_writer_api_streams_into_the_remote_file(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """Writes of odd sizes through open_atomic arrive in order under the final name."""
        pieces = [b"a" * 1, b"b" * 65_537, b"c" * 300_000, b""]
        upload = transport.open_atomic(FINAL)
        with upload as writer:
            for piece in pieces:
                writer.write(piece)

        assert upload.result is not None
        assert b"".join(pieces) == remote.files()[NAME]
        assert writer.bytes_written == upload.result.size

    def test_empty_upload(self, transport: Transport, remote: RemoteView) -> None:
        """A zero-byte upload still ends as a final file, with no temporary left."""
        transport.put_atomic(io.BytesIO(b""), FINAL, expected_size=0)

        assert remote.files() == {NAME: b""}

    def test_retry_replaces_rather_than_duplicates(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """Uploading the same final name twice leaves one file with the second content."""
        transport.put_atomic(io.BytesIO(b"first"), FINAL)
        transport.put_atomic(io.BytesIO(b"second"), FINAL)

        assert remote.files() == {NAME: b"second"}

    def test_failure_inside_block_leaves_nothing(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """If the encryptor fails mid-stream, the temporary is removed and no final appears."""
        with pytest.raises(UploadError), transport.open_atomic(FINAL) as writer:
            writer.write(b"x" * 100_000)
            raise UploadError

        assert remote.files() == {}

    def test_size_mismatch_is_not_renamed(self, transport: Transport, remote: RemoteView) -> None:
        """A byte count different from expected_size refuses the rename and cleans up."""
        with pytest.raises(SizeMismatchError):
            transport.put_atomic(io.BytesIO(b"12345"), FINAL, expected_size=6)

        assert remote.files() == {}

    def test_leftover_temporary_is_replaced(self, transport: Transport, remote: RemoteView) -> None:
        """A temporary left by an interrupted attempt is removed by the next attempt."""
        leftover = part_name(FINAL).rpartition("/")[2]
        remote.plant(leftover, b"half of an earlier attempt")

        transport.put_atomic(io.BytesIO(b"complete"), FINAL)

        assert remote.files() == {NAME: b"complete"}

    def test_upload_to_missing_folder_is_permanent(self, transport: Transport) -> None:
        """Uploading into a folder that does not exist is a permanent not-found error."""
        with pytest.raises(RemoteNotFoundError):
            transport.put_atomic(io.BytesIO(b"x"), f"southend-uhft/nowhere/{NAME}")

    @pytest.mark.parametrize(
        "path",
        [
            "../essex-police/inbox/x.age",
            "/essex-police/inbox/x.age",
            "southend-uhft//inbox/x.age",
            "southend-uhft/./inbox/x.age",
            "southend-uhft/inbox/",
            "southend-uhft/inbox/.hidden.age",
            "southend-uhft/inbox/new\nline.age",
            "southend-uhft/inbox/" + "a" * 300,
            "southend-uhft/inbox/x.age.part",
            "",
        ],
    )
    def test_unsafe_paths_refused_before_sending(self, transport: Transport, path: str) -> None:
        """Traversal, absolute, empty-component, hidden, control-char and over-long paths are
        refused by the client for every operation."""
        with pytest.raises(RemotePathError):
            transport.put_atomic(io.BytesIO(b"x"), path)
        with pytest.raises(RemotePathError):
            transport.get(path, io.BytesIO(), max_size=10)
        with pytest.raises(RemotePathError):
            transport.remove(path)

    def test_list_returns_regular_files_sorted(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """A listing returns valid names of regular files with their sizes, sorted by name."""
        remote.plant("b.age", b"22")
        remote.plant("a.age", b"1")

        listing = transport.list(FOLDER, validate=_ours)

        assert [(e.name, e.size) for e in listing.entries] == [("a.age", 1), ("b.age", 2)]
        assert (listing.refused, listing.truncated) == ((), False)

    def test_list_refuses_hostile_entries(self, transport: Transport, remote: RemoteView) -> None:
        """Links, folders, bad names and undecodable names are refused, never returned."""
        remote.plant("good.age", b"ok")
        remote.plant("evil.txt", b"not ours")
        remote.plant("new\nline.age", b"x")
        remote.plant_symlink("link.age", "good.age")
        remote.plant_dir("dir.age")
        remote.plant_raw_name(b"bad\xff.age", b"x")

        listing = transport.list(FOLDER, validate=_ours)

        assert [RemoteEntry("good.age", 2, listing.entries[0].mtime)] == list(listing.entries)
        assert {
            RefusedEntry("bad\\xff.age", EntryKind.REGULAR, RefusalReason.UNDECODABLE),
            RefusedEntry("dir.age", EntryKind.DIRECTORY, RefusalReason.NOT_REGULAR),
            RefusedEntry("evil.txt", EntryKind.REGULAR, RefusalReason.BAD_NAME),
            RefusedEntry("link.age", EntryKind.SYMLINK, RefusalReason.NOT_REGULAR),
            RefusedEntry("new\\nline.age", EntryKind.REGULAR, RefusalReason.BAD_NAME),
        } == set(listing.refused)

    def test_list_skips_and_reports_temporaries(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """Our own temporaries are not entries; they are reported for clean-up."""
        leftover = part_name(FINAL).rpartition("/")[2]
        remote.plant(leftover, b"partial")

        listing = transport.list(FOLDER, validate=_ours)

        assert ((), (), (leftover,)) == (listing.entries, listing.refused, listing.temporaries)
        assert transport.remove(f"{FOLDER}/{leftover}") is True

    def test_list_refuses_look_alike_temporaries(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """Only a regular file named in the temporary grammar (FORMAT.md §6.1, any 16-hex
        token: ours, or a partner's upload in progress) for a final name allowed in the folder
        is skipped as a temporary; a temporary of a name not allowed there, and a directory or
        link under a temporary name, are refused (security review L4: nothing can be kept
        hidden in a partner's folder)."""
        ours = part_name(FINAL).rpartition("/")[2]
        in_progress = f".{NAME.replace('0123', 'fedc', 1)}.0000000000000000.part"
        not_allowed = part_name(f"{FOLDER}/notes.txt").rpartition("/")[2]
        other_token = ".notes.txt.0123456789abcdef.part"
        as_dir = f".{NAME.replace('0123', '4567', 1)}.0123456789abcdef.part"
        as_link = part_name(f"{FOLDER}/{NAME.replace('0123', '89ab', 1)}").rpartition("/")[2]
        remote.plant(ours, b"partial")
        remote.plant(in_progress, b"partial")
        remote.plant(not_allowed, b"kept hidden")
        remote.plant(other_token, b"kept hidden")
        remote.plant_dir(as_dir)
        remote.plant_symlink(as_link, NAME)

        listing = transport.list(FOLDER, validate=_ours)

        assert ((), tuple(sorted((ours, in_progress)))) == (
            listing.entries,
            listing.temporaries,
        )
        assert {
            RefusedEntry(not_allowed, EntryKind.REGULAR, RefusalReason.BAD_NAME),
            RefusedEntry(other_token, EntryKind.REGULAR, RefusalReason.BAD_NAME),
            RefusedEntry(as_dir, EntryKind.DIRECTORY, RefusalReason.NOT_REGULAR),
            RefusedEntry(as_link, EntryKind.SYMLINK, RefusalReason.NOT_REGULAR),
        } == set(listing.refused)

    def test_list_is_capped(self, transport: Transport, remote: RemoteView) -> None:
        """A folder with more entries than the cap yields a truncated listing."""
        for i in range(12):
            remote.plant(f"f{i:02}.age", b"")

        listing = transport.list(FOLDER, validate=_ours, max_entries=5)

        assert listing.truncated
        assert len(listing.entries) <= 5

    def test_list_missing_folder(self, transport: Transport) -> None:
        """Listing a folder that does not exist is a permanent not-found error."""
        with pytest.raises(RemoteNotFoundError):
            transport.list("southend-uhft/nowhere")

    def test_get_streams_exact_bytes(self, transport: Transport, remote: RemoteView) -> None:
        """A download returns exactly the stored bytes and their count."""
        data = bytes(range(251)) * 4001
        remote.plant("big.age", data)
        out = io.BytesIO()

        count = transport.get(f"{FOLDER}/big.age", out, max_size=len(data))

        assert (len(data), data) == (count, out.getvalue())

    def test_get_caps_size(self, transport: Transport, remote: RemoteView) -> None:
        """A file over the cap is refused and nothing is written to the destination."""
        remote.plant("big.age", b"x" * 1001)
        out = io.BytesIO()

        with pytest.raises(RemoteTooLargeError):
            transport.get(f"{FOLDER}/big.age", out, max_size=1000)
        assert out.getvalue() == b""

    def test_get_refuses_links_and_folders(self, transport: Transport, remote: RemoteView) -> None:
        """A symlink (even to a regular file) and a folder are refused by get."""
        remote.plant("target.age", b"secret")
        remote.plant_symlink("link.age", "target.age")
        remote.plant_dir("dir.age")

        for name in ("link.age", "dir.age"):
            with pytest.raises(RemoteRefusedEntry):
                transport.get(f"{FOLDER}/{name}", io.BytesIO(), max_size=100)

    def test_get_missing_file(self, transport: Transport) -> None:
        """Downloading a name that does not exist is a permanent not-found error."""
        with pytest.raises(RemoteNotFoundError) as caught:
            transport.get(f"{FOLDER}/{NAME}", io.BytesIO(), max_size=10)
        assert isinstance(caught.value, PermanentTransportError)

    def test_remove_is_idempotent(self, transport: Transport, remote: RemoteView) -> None:
        """Remove reports whether the file existed, and a second remove is not an error."""
        remote.plant(NAME, b"x")

        assert (transport.remove(FINAL), transport.remove(FINAL)) == (True, False)
        assert remote.files() == {}

    def test_connection_is_reused_after_close(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """After close, the next call reconnects transparently."""
        transport.put_atomic(io.BytesIO(b"one"), FINAL)
        transport.close()

        assert len(transport.list(FOLDER).entries) == 1
        assert remote.files() == {NAME: b"one"}

    def test_put_many_uploads_every_file_atomically(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """A batch larger than one pipeline window lands complete, with no temporaries."""
        items = [(f"{FOLDER}/{i:032x}.age", bytes([i % 256]) * (i * 97)) for i in range(70)]

        results = transport.put_many(items)

        assert [(r.remote_path, r.size) for r in results] == [(p, len(d)) for p, d in items]
        assert remote.files() == {p.rpartition("/")[2]: d for p, d in items}

    def test_put_many_replaces_leftovers_and_reports_failures(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """A leftover temporary does not stop its file; a file that cannot be written is
        reported after the others completed."""
        good = [(f"{FOLDER}/{i:032x}.age", b"data %d" % i) for i in range(3)]
        remote.plant(part_name(good[1][0]).rpartition("/")[2], b"leftover")
        remote.plant_dir(f"{5:032x}.age")
        bad = (f"{FOLDER}/{5:032x}.age", b"cannot replace a folder")

        with pytest.raises(PermanentTransportError):
            transport.put_many([*good, bad])

        assert remote.files() == {p.rpartition("/")[2]: d for p, d in good}

    def test_put_many_checks_every_path_first(
        self, transport: Transport, remote: RemoteView
    ) -> None:
        """One unsafe path refuses the whole batch before anything is sent."""
        with pytest.raises(RemotePathError):
            transport.put_many([(FINAL, b"x"), ("../escape.age", b"y")])

        assert remote.files() == {}
