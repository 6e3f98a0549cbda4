"""Run every manifest and receipt test vector in tests/vectors/ (FORMAT.md §11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.core.naming import hub_stem
from exchange.manifest import (
    ManifestRejected,
    Party,
    Peer,
    SentDelivery,
    is_unverified_rejection,
    open_manifest,
    open_receipt,
    open_unverified_rejection,
)
from exchange.signing import KeyRejected, Reason, SignatureRejected, parse_public_key
from tests.vectors import generate

VECTORS = Path(__file__).parent.parent / "vectors"
EXPECT = frozenset(
    {
        "success",
        "signature failure",
        "manifest failure",
        "receipt failure",
        "wrong recipient",
        "replay",
        "key failure",
    }
)
SIGNATURE_REASONS = frozenset(
    {Reason.BAD_SIGNATURE, Reason.MALFORMED_SIGNATURE, Reason.KEY_MISMATCH, Reason.UNKNOWN_SIGNER}
)


def _vector_files() -> list[Path]:
    return sorted(
        p
        for p in VECTORS.iterdir()
        if p.is_file() and p.name.startswith(("manifest_", "receipt_", "key_"))
    )


def _load(path: Path) -> tuple[dict[str, str], bytes]:
    data = path.read_bytes()
    head, separator, payload = data.partition(b"\n\n")
    assert separator, f"{path.name}: no blank line after the header"
    header: dict[str, str] = {}
    for line in head.decode("utf-8").split("\n"):
        key, sep, value = line.partition(": ")
        assert sep, f"{path.name}: bad header line {line!r}"
        assert key not in header, f"{path.name}: duplicate header {key!r}"
        header[key] = value
    return header, payload


def _category(kind: str, reason: Reason) -> str:
    if reason in SIGNATURE_REASONS:
        return "signature failure"
    if reason in {Reason.SMALL_ORDER_KEY, Reason.MALFORMED_KEY}:
        return "key failure"
    if reason is Reason.WRONG_RECIPIENT:
        return "wrong recipient"
    if reason is Reason.REPLAY:
        return "replay"
    return f"{kind} failure"


def _run_manifest(header: dict[str, str], payload: bytes) -> str:
    last = header["last sequence"]
    peer = Peer(
        header["sender"],
        parse_public_key(header["sender key"]),
        frozenset(header["sender agreements"].split()),
        None if last == "none" else int(last),
    )
    me = Party(header["recipient"], header["recipient key"])
    opened = open_manifest(payload, senders={peer.id: peer}, me=me)
    return opened.sha256


def _run_receipt(header: dict[str, str], payload: bytes) -> str:
    record = SentDelivery(
        header["sent recipient"],
        header["sent agreement"],
        header["sent manifest sha256"],
        header["sent plaintext sha256"],
    )
    if is_unverified_rejection(payload):  # FORMAT.md §5.3: the folder's partner is the signer
        return open_unverified_rejection(
            payload,
            signer=header["signer"],
            key=parse_public_key(header["signer key"]),
            me=header["me"],
            made=lambda name: record if name == hub_stem(header["delivery"]) else None,
        ).sha256
    opened = open_receipt(
        payload,
        recipients={header["signer"]: parse_public_key(header["signer key"])},
        me=header["me"],
        sent=lambda delivery: record if delivery == header["delivery"] else None,
    )
    return opened.sha256


@pytest.mark.parametrize("path", _vector_files(), ids=lambda p: p.name)
def test_vector(path: Path) -> None:
    """Each vector gives exactly its expected result and reason code."""
    header, payload = _load(path)
    assert header["expect"] in EXPECT
    kind = header["kind"]
    run = {"manifest": _run_manifest, "receipt": _run_receipt}[kind]
    if header["expect"] == "success":
        sha = run(header, payload)
        if "manifest sha256" in header:
            assert sha == header["manifest sha256"]
        return
    with pytest.raises((ManifestRejected, SignatureRejected, KeyRejected)) as raised:
        run(header, payload)
    error = raised.value
    assert isinstance(error, ManifestRejected | SignatureRejected | KeyRejected)
    assert error.reason.value == header["reason"]
    assert _category(kind, error.reason) == header["expect"]


def test_committed_vectors_match_the_generator() -> None:
    """tests/vectors/ holds exactly what generate.py writes (rerun it after a format change)."""
    expected = generate.all_vectors()
    on_disk = {p.name: p.read_bytes() for p in _vector_files()}
    assert sorted(on_disk) == sorted(expected)
    for name, data in expected.items():
        assert on_disk[name] == data, name


def test_vectors_cover_every_expectation() -> None:
    """Every expect value of the closed vocabulary has at least one vector."""
    seen = {_load(p)[0]["expect"] for p in _vector_files()}
    assert seen == EXPECT
