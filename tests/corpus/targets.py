"""Every parser that reads outside data, each paired with the inputs to throw at it and the
only outcomes it may have.

Rules:

1. A target's ``check`` feeds one input to the parser and returns normally when the parser
   either accepted it or refused it with OUR error type (an ExchangeError subclass, or the
   ValueError a module documents); any other exception propagates and fails the test.
2. Strategies mix raw bytes (anything at all) with mutations of a valid document (bytes flipped,
   cut, inserted, lines swapped), because raw bytes rarely get past a parser's first line.
3. No file I/O except the config target, which writes into a private temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from exchange import agefmt, signing
from exchange.agefmt import header as age_header
from exchange.config import load_config
from exchange.core import naming
from exchange.core.textcheck import CsvChecker, CsvHeaderChecker
from exchange.errors import ConfigError, FormatError, KeyFileError
from exchange.manifest import (
    Manifest,
    Receipt,
    open_manifest,
    open_receipt,
    sign_manifest,
    sign_receipt,
)
from exchange.transport import port
from tests.vectors import testkeys as tk

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "config"
FIELDS = ("referral_id", "received_date", "subject_ref", "age_band", "concern_category")


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` with a few random edits: flip, delete, insert, truncate, duplicate a line."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup-line"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from([b"\n", b"\r", b"\x00", b" ", b":", b"\xff", b"="]))
        elif op == "truncate":
            del data[at:]
        elif op == "dup-line":
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def bytes_or_mutation(valid: bytes, max_size: int = 2048) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=max_size), mutated(valid))


# -- config ---------------------------------------------------------------------------------


def check_toml(text: str) -> None:
    # TOMLDecodeError is the documented failure (a ValueError subclass).
    with contextlib.suppress(tomllib.TOMLDecodeError):
        tomllib.loads(text)


_CONFIG_FILES = (
    "exchange.toml",
    "agreements/mash-referrals.toml",
    "partners/southend-uhft.toml",
)


def _config_inputs() -> st.SearchStrategy[tuple[str, bytes]]:
    def for_file(name: str) -> st.SearchStrategy[tuple[str, bytes]]:
        valid = (EXAMPLE_CONFIG / name).read_bytes()
        return st.tuples(st.just(name), bytes_or_mutation(valid))

    return st.one_of(*(for_file(n) for n in _CONFIG_FILES))


def check_config(case: tuple[str, bytes]) -> None:
    name, data = case
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config"
        shutil.copytree(EXAMPLE_CONFIG, config)
        for path in [config, *config.rglob("*")]:
            # The loader refuses config others could change (B21); a umask 002 checkout has it.
            path.chmod(path.stat().st_mode & ~0o022)
        (config / name).write_bytes(data)
        try:
            load_config(config)
        except ConfigError as error:
            assert error.problems
            assert all(p for p in error.problems)


# -- CSV header and content ---------------------------------------------------------------------

_VALID_CSV = (",".join(FIELDS) + "\nR-1,2026-05-01,S0001,10-15,neglect\n").encode()


@st.composite
def csv_inputs(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = draw(
        st.one_of(
            st.binary(max_size=600),
            mutated(_VALID_CSV),
            st.lists(
                st.sampled_from(
                    [*FIELDS, '"', ",", "\n", "\r\n", "\r", "\ufeff", "é", "\x00", "DOB", '""']
                ),
                max_size=40,
            ).map(lambda parts: "".join(parts).encode("utf-8")),
        )
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    return data, cuts


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def check_csv(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    header = CsvHeaderChecker(FIELDS, max_header_bytes=256)
    for chunk in _chunks(data, cuts):
        header.feed(chunk)
    assert header.finish() is not None
    whole = CsvChecker(FIELDS, allow_empty=False, max_header_bytes=256)
    for chunk in _chunks(data, cuts):
        whole.feed(chunk)
    decision = whole.finish()
    # The verdict must not depend on where the file was cut into chunks.
    one = CsvChecker(FIELDS, allow_empty=False, max_header_bytes=256)
    one.feed(data)
    assert type(decision) is type(one.finish())


# -- age header and whole files -------------------------------------------------------------------


def _age_sample() -> tuple[bytes, Any]:
    identity = agefmt.generate_x25519_identity()
    out = io.BytesIO()
    agefmt.encrypt(io.BytesIO(b"referral_id\nR-1\n" * 300), out, [identity.recipient()])
    return out.getvalue(), identity


_AGE_FILE, _AGE_IDENTITY = _age_sample()
_AGE_HEADER = _AGE_FILE[: _AGE_FILE.index(b"\n---") + 48]


def check_age_header(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        age_header.parse(io.BytesIO(data).readline)


def check_age_file(data: bytes) -> None:
    out = io.BytesIO()
    with contextlib.suppress(FormatError):
        agefmt.decrypt(io.BytesIO(data), out, [_AGE_IDENTITY])


# -- manifests and receipts -----------------------------------------------------------------------

_SIGNED_MANIFEST = sign_manifest(tk.sample_manifest(), tk.SENDER_KEY)
_MANIFEST_SHA = hashlib.sha256(tk.sample_manifest().encode()).hexdigest()
_SIGNED_RECEIPT = sign_receipt(tk.sample_receipt(_MANIFEST_SHA), tk.RECIPIENT_KEY)


def check_manifest_body(data: bytes) -> None:
    for decode in (Manifest.decode, Receipt.decode):
        with contextlib.suppress(FormatError):
            decode(data)


def check_signed_manifest(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        open_manifest(data, senders=tk.senders(), me=tk.me())


def check_signed_receipt(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        open_receipt(
            data,
            recipients={tk.RECIPIENT: tk.RECIPIENT_KEY.public_key},
            me=tk.SENDER,
            sent=lambda _delivery: tk.sent_record(_MANIFEST_SHA),
        )


# -- keys read from partner files and key cards --------------------------------------------------


def check_key_text(text: str) -> None:
    for parse in (agefmt.parse_recipient, agefmt.parse_identity):
        with contextlib.suppress(KeyFileError):
            parse(text)
    for parse_key in (signing.parse_public_key, signing.parse_ssh_public_key):
        with contextlib.suppress(KeyFileError, FormatError):
            parse_key(text)


# -- hub listings and remote paths -----------------------------------------------------------------

_HUB_NAME = naming.DeliveryNames.for_delivery("dl-" + "ab" * 16).manifest


def _hub_names() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=300),
        mutated(_HUB_NAME.encode()).map(lambda b: b.decode("utf-8", "replace")),
        mutated(naming.temp_name(_HUB_NAME, "0" * 16).encode()).map(
            lambda b: b.decode("utf-8", "replace")
        ),
    )


def check_hub_name(name: str) -> None:
    for folder in naming.Folder:
        found = naming.read_name(folder, name)
        if found is not None:
            assert found.name == name
            assert port.is_safe_component(found.final_name)
            assert "/" not in name and "\x00" not in name


def check_listed_raw(raw: bytes) -> None:
    for kind in port.EntryKind:
        name, refusal = port.classify_listed_name(raw, kind, None)
        if name is not None:
            assert refusal is None
            assert port.is_safe_component(name)


def check_remote_path(path: str) -> None:
    try:
        parts = port.check_remote_path(path)
    except port.RemotePathError:
        return
    assert all(p not in ("", ".", "..") for p in parts)
    assert not path.startswith("/")


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any], None]


TARGETS = (
    Target("toml", st.text(max_size=400), check_toml),
    Target("config", _config_inputs(), check_config),
    Target("csv-header-and-content", csv_inputs(), check_csv),
    Target("age-header", bytes_or_mutation(_AGE_HEADER), check_age_header),
    Target("age-file", bytes_or_mutation(_AGE_FILE, 512), check_age_file),
    Target("manifest-and-receipt-body", bytes_or_mutation(_SIGNED_MANIFEST), check_manifest_body),
    Target("signed-manifest", bytes_or_mutation(_SIGNED_MANIFEST), check_signed_manifest),
    Target("signed-receipt", bytes_or_mutation(_SIGNED_RECEIPT), check_signed_receipt),
    Target("key-text", st.text(max_size=200), check_key_text),
    Target("hub-listing-name", _hub_names(), check_hub_name),
    Target("hub-listing-raw", st.binary(max_size=300), check_listed_raw),
    Target(
        "remote-path",
        st.one_of(
            st.text(max_size=200),
            st.lists(st.sampled_from(["a", "..", ".", "", "inbox", "/", "x\n", "é"])).map("/".join),
        ),
        check_remote_path,
    ),
)
