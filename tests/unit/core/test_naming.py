"""Opaque hub names: derivation, temp names and the allow-list for names read back."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core import naming
from exchange.core.naming import DeliveryNames, FileKind, Folder, read_name
from exchange.transport.port import part_name

DELIVERY = "dl-0123456789abcdef0123456789abcdef"
OTHER = "dl-fedcba9876543210fedcba9876543210"


def test_names_are_deterministic_and_opaque() -> None:
    """The same delivery id gives the same names; the stem is the labelled SHA-256 of the id."""
    names = DeliveryNames.for_delivery(DELIVERY)
    assert names == DeliveryNames.for_delivery(DELIVERY)
    expected = hashlib.sha256(b"exchange/v1 hub name\n" + DELIVERY.encode()).hexdigest()[:32]
    assert names.stem == expected
    assert names.payload == expected + ".age"
    assert names.manifest == expected + ".manifest.age"
    assert names.receipt == expected + ".receipt.age"
    assert DELIVERY[3:] not in names.payload
    assert DeliveryNames.for_delivery(OTHER).stem != names.stem


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "dl-",
        "dl-0123456789ABCDEF0123456789ABCDEF",
        "dl-0123456789abcdef0123456789abcde",
        "dl-0123456789abcdef0123456789abcdef0",
        "ds-0123456789abcdef0123456789abcdef",
        "dl-0123456789abcdef0123456789abcdef\n",
        "../etc/passwd",
    ],
)
def test_bad_delivery_ids_are_refused(bad: str) -> None:
    """A hub name is only derived from a well-formed delivery id."""
    assert not naming.is_delivery_id(bad)
    with pytest.raises(ValueError, match="delivery id"):
        naming.hub_stem(bad)


def test_delivery_id_from_hex() -> None:
    """The shell's 32 random hex digits become 'dl-<hex>'; anything else is refused."""
    assert naming.delivery_id_from_hex("0123456789abcdef0123456789abcdef") == DELIVERY
    with pytest.raises(ValueError, match="delivery id"):
        naming.delivery_id_from_hex("XYZ")


def test_temp_name_pattern_and_read_back() -> None:
    """A temp name is '.<final>.<token>.part' and reads back as a temporary file of its kind."""
    names = DeliveryNames.for_delivery(DELIVERY)
    temp = naming.temp_name(names.manifest, "00112233aabbccdd")
    assert temp == f".{names.manifest}.00112233aabbccdd.part"
    hub_file = read_name(Folder.INBOX, temp)
    assert hub_file is not None
    assert hub_file.temporary
    assert hub_file.kind is FileKind.MANIFEST
    assert hub_file.final_name == names.manifest


@pytest.mark.parametrize(
    ("final", "token"),
    [
        ("x.age", "00112233aabbccdd"),
        ("../" + "0" * 32 + ".age", "00112233aabbccdd"),
        ("0" * 32 + ".age", "00112233AABBCCDD"),
        ("0" * 32 + ".age", "0011"),
        ("0" * 32 + ".age", "00112233aabbccdd/x"),
    ],
)
def test_temp_name_refuses_bad_inputs(final: str, token: str) -> None:
    """Only hub names and 16-hex tokens make temp names."""
    with pytest.raises(ValueError, match="temp name"):
        naming.temp_name(final, token)


@pytest.mark.parametrize(
    ("folder", "kind", "allowed"),
    [
        (Folder.INBOX, FileKind.PAYLOAD, True),
        (Folder.INBOX, FileKind.MANIFEST, True),
        (Folder.INBOX, FileKind.RECEIPT, True),
        (Folder.OUTBOX, FileKind.PAYLOAD, True),
        (Folder.OUTBOX, FileKind.MANIFEST, True),
        (Folder.OUTBOX, FileKind.RECEIPT, False),
        (Folder.RECEIPTS, FileKind.PAYLOAD, False),
        (Folder.RECEIPTS, FileKind.MANIFEST, False),
        (Folder.RECEIPTS, FileKind.RECEIPT, True),
    ],
)
def test_kinds_allowed_per_folder(folder: Folder, kind: FileKind, allowed: bool) -> None:
    """Each folder accepts only its kinds of file, final or temporary."""
    stem = DeliveryNames.for_delivery(DELIVERY).stem
    final = stem + kind.value
    for name in (final, naming.temp_name(final, "0123456789abcdef")):
        hub_file = read_name(folder, name)
        assert (hub_file is not None) is allowed
        if hub_file is not None:
            assert hub_file.kind is kind
            assert hub_file.stem == stem


STEM = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "data.csv",
        STEM,
        STEM + ".AGE",
        STEM.upper() + ".age",
        STEM + ".age ",
        " " + STEM + ".age",
        STEM + ".age\n",
        STEM + ".age\x00",
        STEM[:-1] + ".age",
        STEM + "0.age",
        STEM + ".manifest.age.age",
        STEM + ".signature.age",
        "../" + STEM + ".age",
        "inbox/" + STEM + ".age",
        "-" + STEM + ".age",
        STEM + ".age.part",
        "." + STEM + ".age.part",
        "." + STEM + ".age.0123456789abcdef.partial",
        "." + STEM + ".age.0123456789ABCDEF.part",
        ".." + STEM + ".age.0123456789abcdef.part",
        STEM[:31] + "\u0660.age",  # Arabic-Indic digit zero: \d would match it, [0-9] must not
        STEM + ".age\u200b",
        "\u202e" + STEM + ".age",
    ],
)
def test_everything_else_is_refused(name: str) -> None:
    """Names outside the allow-list (case, spaces, controls, paths, odd suffixes) are refused."""
    for folder in Folder:
        assert read_name(folder, name) is None


@given(st.text(max_size=80))
def test_read_name_accepts_only_the_grammar(name: str) -> None:
    """Any accepted name is ASCII, path-free, and rebuilds to itself from its parts."""
    for folder in Folder:
        hub_file = read_name(folder, name)
        if hub_file is not None:
            assert name.isascii()
            assert "/" not in name
            rebuilt = hub_file.final_name
            assert rebuilt == name or name.startswith(f".{rebuilt}.")


def test_remote_path() -> None:
    """A remote path joins a valid partner folder, a folder and an allowed hub name."""
    names = DeliveryNames.for_delivery(DELIVERY)
    path = naming.remote_path("southend-uhft", Folder.INBOX, names.payload)
    assert path == f"southend-uhft/inbox/{names.payload}"
    with pytest.raises(ValueError, match="not a hub name"):
        naming.remote_path("southend-uhft", Folder.RECEIPTS, names.payload)
    with pytest.raises(ValueError, match="partner folder"):
        naming.remote_path("../essex-police", Folder.INBOX, names.payload)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("plain.csv", '"plain.csv"'),
        ("a\nb", '"a\\x0ab"'),
        ('q"\\', '"q\\x22\\x5c"'),
        ("caf\u00e9", '"caf\\xc3\\xa9"'),
        ("\u202egpj.exe", '"\\xe2\\x80\\xaegpj.exe"'),
        ("bad\udcff", '"bad\\xed\\xb3\\xbf"'),
        ("x" * 81, '"' + "x" * 80 + '"...'),
    ],
)
def test_printable_escapes_hostile_names(name: str, shown: str) -> None:
    """Hostile names are shown as quoted printable ASCII with \\xNN escapes, cut when long."""
    assert naming.printable(name) == shown


def test_transport_temp_names_are_recognised() -> None:
    """The transport's temporary names for our final names read back as our temp files."""
    names = DeliveryNames.for_delivery(DELIVERY)
    for final in (names.payload, names.manifest, names.receipt):
        temp = part_name(f"southend-uhft/inbox/{final}").rpartition("/")[2]
        hub_file = read_name(Folder.INBOX, temp)
        assert hub_file is not None
        assert hub_file.temporary
        assert hub_file.final_name == final
        assert temp == naming.temp_name(final, temp.split(".")[-2])
