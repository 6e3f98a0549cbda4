"""Manifests and receipts: canonical encoding, signing, and every verification rule."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import canonical
from exchange.errors import FormatError, InvariantError, ManifestError, SignatureError
from exchange.manifest import (
    MANIFEST_MAX_SIZE,
    RECEIPT_MAX_SIZE,
    RECEIPT_REASONS,
    Correction,
    Manifest,
    ManifestRejected,
    Opened,
    Receipt,
    Status,
    check_payload,
    open_manifest,
    open_receipt,
    sign_manifest,
    sign_receipt,
)
from exchange.signing import L, Reason, SignatureRejected
from tests.vectors import testkeys as tk

SIGNED = sign_manifest(tk.sample_manifest(), tk.SENDER_KEY)
BODY = tk.sample_manifest().encode()
MANIFEST_SHA = hashlib.sha256(BODY).hexdigest()


def _open(signed: bytes, **kwargs: object) -> Opened[Manifest]:
    options: dict[str, object] = {"senders": tk.senders(), "me": tk.me()}
    options.update(kwargs)
    return open_manifest(signed, **options)  # type: ignore[arg-type]


def _reason_of(signed: bytes, **kwargs: object) -> Reason:
    with pytest.raises((ManifestRejected, SignatureRejected)) as raised:
        _open(signed, **kwargs)
    error = raised.value
    assert isinstance(error, ManifestRejected | SignatureRejected)
    return error.reason


def _resign_body(body: bytes) -> bytes:
    """A body signed by the real sender key: isolates grammar checks from signature checks."""
    return body + b"signature: " + base64.b64encode(tk.SENDER_KEY.sign(body)) + b"\n"


# --- round trips ---------------------------------------------------------------------------------


def test_sign_and_open_round_trip() -> None:
    """A signed manifest opens to the same value, with the SHA-256 of its body."""
    opened = _open(SIGNED)
    assert opened.value == tk.sample_manifest()
    assert opened.sha256 == MANIFEST_SHA


def test_body_layout() -> None:
    """The body starts with the magic line, has sorted field lines and no signature line."""
    lines = BODY.decode().splitlines()
    assert lines[0] == "exchange-manifest/v1"
    names = [line.split(": ", 1)[0] for line in lines[1:]]
    assert names == sorted(names)
    assert BODY + SIGNED[len(BODY) :] == SIGNED
    assert SIGNED[len(BODY) :].startswith(b"signature: ")


def test_manifest_without_correction_round_trips() -> None:
    """A first version (no supersedes fields) encodes without them and decodes back."""
    first = tk.sample_manifest(correction=None, dataset_version=1)
    body = first.encode()
    assert b"supersedes" not in body
    assert Manifest.decode(body) == first


def test_build_normalises_creation_time() -> None:
    """Manifest.build converts the creation time to UTC in whole seconds."""
    values = {f.name: getattr(tk.sample_manifest(), f.name) for f in dataclasses.fields(Manifest)}
    values["created"] = datetime.fromisoformat("2026-11-25T11:15:00.750+01:00")
    built = Manifest.build(**values)  # type: ignore[arg-type]
    assert built.created == datetime(2026, 11, 25, 10, 15, 0, tzinfo=UTC)


def _valid_text(max_bytes: int) -> st.SearchStrategy[str]:
    def ok(value: str) -> bool:
        try:
            canonical.check_text("t", value, max_bytes)
        except ValueError:
            return False
        return True

    return st.text(min_size=1, max_size=40).filter(ok)


_hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_ids = st.from_regex(canonical.PARTY_ID, fullmatch=True)
_fingerprints = st.binary(min_size=32, max_size=32).map(
    lambda b: "SHA256:" + base64.b64encode(b).decode().rstrip("=")
)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    version = draw(st.integers(1, 2**63 - 1))
    correction = None
    if version > 1 and draw(st.booleans()):
        correction = Correction(
            draw(st.integers(1, version - 1)), draw(_valid_text(100)), draw(_valid_text(1000))
        )
    created = draw(_times)
    file_name = draw(_valid_text(255).filter(lambda s: "/" not in s and s not in {".", ".."}))
    return Manifest(
        delivery="dl-" + draw(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)),
        dataset="ds-" + draw(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)),
        dataset_version=version,
        correction=correction,
        sender=draw(_ids),
        sender_key=draw(_fingerprints),
        recipient=draw(_ids),
        recipient_key=draw(_fingerprints),
        agreement=draw(_ids),
        purpose=draw(_valid_text(1000)),
        legal_basis=draw(_valid_text(1000)),
        classification=draw(_valid_text(64)),
        file_name=file_name,
        media_type=draw(st.from_regex(canonical.MEDIA_TYPE, fullmatch=True)),
        plaintext_size=draw(st.integers(0, 2**63 - 1)),
        plaintext_sha256=draw(_hex64),
        ciphertext_sha256=draw(_hex64),
        created=created,
        retain_until=draw(st.dates(min_value=created.date(), max_value=date(2199, 1, 1))),
        sequence=draw(st.integers(1, 2**63 - 1)),
    )


@given(manifests())
def test_decode_encode_round_trip(manifest: Manifest) -> None:
    """decode(encode(x)) == x for any valid manifest, and the body is pure ASCII."""
    body = manifest.encode()
    assert Manifest.decode(body) == manifest
    assert body.isascii()


def _mutations() -> st.SearchStrategy[bytes]:
    positions = st.integers(0, len(BODY) - 1)
    flip = st.tuples(positions, st.integers(0, 255)).map(
        lambda t: BODY[: t[0]] + bytes([t[1]]) + BODY[t[0] + 1 :]
    )
    insert = st.tuples(positions, st.binary(min_size=1, max_size=4)).map(
        lambda t: BODY[: t[0]] + t[1] + BODY[t[0] :]
    )
    delete = st.tuples(positions, st.integers(1, 8)).map(
        lambda t: BODY[: t[0]] + BODY[t[0] + t[1] :]
    )
    return st.one_of(flip, insert, delete, st.binary(max_size=200))


@settings(max_examples=500)
@given(_mutations())
def test_every_body_that_decodes_re_encodes_identically(body: bytes) -> None:
    """encode(decode(b)) == b for every mutated body that decodes; the rest is refused."""
    try:
        manifest = Manifest.decode(body)
    except ManifestRejected as error:
        assert error.reason in {
            Reason.MALFORMED,
            Reason.NOT_CANONICAL,
            Reason.UNSUPPORTED_VERSION,
        }
    else:
        assert manifest.encode() == body


# --- tampering --------------------------------------------------------------------------------


def _changed_values() -> dict[str, object]:
    return {
        "delivery": "dl-" + "0" * 32,
        "dataset": "ds-" + "0" * 32,
        "dataset_version": 4,
        "correction": Correction(1, "CR-2026-0042", "Date of referral corrected"),
        "sender": "thurrock-council",
        "sender_key": tk.OTHER_KEY.public_key.fingerprint,
        "recipient": "essex-police",
        "recipient_key": tk.OTHER_KEY.public_key.fingerprint,
        "agreement": "police-dv",
        "purpose": "Safeguarding adults",
        "legal_basis": "Care Act 2014 s.45",
        "classification": "OFFICIAL",
        "file_name": "mash referrals 2026-12.csv",
        "media_type": "application/json",
        "plaintext_size": 1,
        "plaintext_sha256": "0" * 64,
        "ciphertext_sha256": "0" * 64,
        "created": datetime(2026, 11, 25, 10, 15, 1, tzinfo=UTC),
        "retain_until": date(2027, 11, 26),
        "sequence": 43,
    }


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Manifest)])
def test_any_field_tampered_breaks_the_signature(field: str) -> None:
    """Changing any one field under the original signature is refused (the signature fails
    or, for the signer fields, the key no longer matches)."""
    tampered_body = tk.sample_manifest(**{field: _changed_values()[field]}).encode()
    assert tampered_body != BODY
    forged = tampered_body + SIGNED[len(BODY) :]
    reason = _reason_of(forged)
    if field == "sender":
        assert reason == Reason.UNKNOWN_SIGNER
    elif field == "sender_key":
        assert reason == Reason.KEY_MISMATCH
    else:
        assert reason == Reason.BAD_SIGNATURE


@pytest.mark.parametrize("index", [0, 10, 31, 32, 50, 63])
def test_signature_bit_flips_are_refused(index: int) -> None:
    """Flipping a bit anywhere in the signature makes it fail."""
    signature = bytearray(base64.b64decode(SIGNED[len(BODY) + 11 : -1]))
    signature[index] ^= 0x40
    forged = BODY + b"signature: " + base64.b64encode(bytes(signature)) + b"\n"
    assert _reason_of(forged) in {Reason.BAD_SIGNATURE, Reason.MALFORMED_SIGNATURE}


def test_malleated_signature_s_plus_l_is_refused() -> None:
    """The second numeric encoding of a valid signature (S + L) is refused as malformed."""
    signature = base64.b64decode(SIGNED[len(BODY) + 11 : -1])
    s = int.from_bytes(signature[32:], "little") + L
    forged = BODY + b"signature: " + base64.b64encode(signature[:32] + s.to_bytes(32, "little"))
    assert _reason_of(forged + b"\n") == Reason.MALFORMED_SIGNATURE


def test_non_canonical_signature_base64_is_refused() -> None:
    """The same 64 signature bytes with non-zero base64 padding bits are refused."""
    line = SIGNED[len(BODY) + 11 : -1]
    assert line.endswith(b"==")
    last = line[-3:-2]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sibling = alphabet[alphabet.index(last) ^ 1 : (alphabet.index(last) ^ 1) + 1]
    forged = BODY + b"signature: " + line[:-3] + sibling + b"==\n"
    assert base64.b64decode(forged[len(BODY) + 11 : -1]) == base64.b64decode(line)
    assert _reason_of(forged) == Reason.MALFORMED_SIGNATURE


@pytest.mark.parametrize(
    "variant",
    [
        lambda sig: sig.rstrip(b"="),
        lambda sig: sig + b"\n",
        lambda sig: b" " + sig,
        lambda sig: (
            sig.replace(b"+", b"-").replace(b"/", b"_")
            if b"+" in sig or b"/" in sig
            else b"!" + sig
        ),
        lambda sig: sig[:-4] + b"AA==",
        lambda sig: base64.b64encode(base64.b64decode(sig) + b"\0"),
    ],
)
def test_other_signature_encodings_are_refused(variant: object) -> None:
    """Unpadded, url-safe, padded, space-prefixed or 65-byte signature encodings are refused."""
    assert callable(variant)
    line = SIGNED[len(BODY) + 11 : -1]
    forged = BODY + b"signature: " + variant(line) + b"\n"
    assert _reason_of(forged) in {
        Reason.MALFORMED_SIGNATURE,
        Reason.MALFORMED,
        Reason.BAD_SIGNATURE,
    }


def test_every_truncation_is_refused() -> None:
    """Every proper prefix of a signed manifest is refused."""
    for size in range(len(SIGNED)):
        with pytest.raises((ManifestRejected, SignatureRejected)):
            _open(SIGNED[:size])


@pytest.mark.parametrize("suffix", [b"\n", b"x", b"signature: AAAA\n", b"\x00"])
def test_appended_bytes_are_refused(suffix: bytes) -> None:
    """Anything after the signature line is refused."""
    with pytest.raises((ManifestRejected, SignatureRejected)):
        _open(SIGNED + suffix)


def test_oversize_is_refused_before_parsing() -> None:
    """A document over the cap is refused as too large, however well formed its start."""
    padded = tk.sample_manifest(purpose="p" * 1000).encode()
    assert len(padded) < MANIFEST_MAX_SIZE
    assert _reason_of(SIGNED + b"x" * MANIFEST_MAX_SIZE) == Reason.TOO_LARGE
    assert _reason_of(b"\xff" * (MANIFEST_MAX_SIZE + 1)) == Reason.TOO_LARGE


def test_largest_legal_manifest_fits_the_cap() -> None:
    """A manifest with every text field at its byte cap, all percent-encoded, is under 16 KiB."""
    big = tk.sample_manifest(
        purpose="é" * 500,
        legal_basis="é" * 500,
        classification="é" * 32,
        file_name="é" * 127,
        correction=Correction(2, "é" * 50, "é" * 500),
        media_type="a" * 63 + "/" + "b" * 63,
    )
    assert len(sign_manifest(big, tk.SENDER_KEY)) <= MANIFEST_MAX_SIZE
    assert _open(sign_manifest(big, tk.SENDER_KEY)).value == big


# --- non-canonical bodies (each re-signed with the real key, so only the grammar can refuse) --


def _swap(line_a: str, line_b: str) -> bytes:
    text = BODY.decode()
    a = next(x for x in text.splitlines() if x.startswith(line_a + ": "))
    b = next(x for x in text.splitlines() if x.startswith(line_b + ": "))
    return text.replace(a, "\0").replace(b, a).replace("\0", b).encode()


def _edit(old: str, new: str) -> bytes:
    text = BODY.decode()
    assert old in text
    return text.replace(old, new, 1).encode()


NON_CANONICAL = {
    "fields swapped": _swap("agreement", "classification"),
    "duplicate field": BODY + b"sequence: 42\n",
    "unknown field": _edit("sequence: 42\n", "sequence: 42\nsignatory: x\n"),
    "missing field": _edit("media-type: text/csv\n", ""),
    "crlf": BODY.replace(b"\n", b"\r\n"),
    "trailing space": _edit("sequence: 42", "sequence: 42 "),
    "double space": _edit("sequence: 42", "sequence:  42"),
    "no space": _edit("sequence: 42", "sequence:42"),
    "tab": _edit("sequence: 42", "sequence:\t42"),
    "blank line": _edit("sequence: 42\n", "sequence: 42\n\n"),
    "empty value": _edit("media-type: text/csv", "media-type: "),
    "upper-case name": _edit("sequence: 42", "Sequence: 42"),
    "leading zero": _edit("sequence: 42", "sequence: 042"),
    "plus sign": _edit("sequence: 42", "sequence: +42"),
    "sequence zero": _edit("sequence: 42", "sequence: 0"),
    "integer too large": _edit(
        f"plaintext-size: {len(tk.PLAINTEXT)}", "plaintext-size: 9223372036854775808"
    ),
    "unicode digits": _edit("sequence: 42", "sequence: \u0664\u0662"),
    "lower-case percent hex": _edit("(protocol %C2%A7", "(protocol %c2%a7"),
    "needless percent": _edit("text/csv", "text%2Fcsv"),
    "percent letter": _edit("file-name: mash", "file-name: %6Dash"),
    "literal leading space": _edit("file-name: mash", "file-name:  mash"),
    "encoded inner space": _edit("file-name: mash referrals", "file-name: mash%20referrals"),
    "overlong utf-8": _edit("(protocol %C2%A7", "(protocol %C0%AF"),
    "invalid utf-8": _edit("(protocol %C2%A7", "(protocol %FF"),
    "raw utf-8": _edit("(protocol %C2%A7", "(protocol §"),
    "upper-case sha": _edit(
        tk.sample_manifest().plaintext_sha256, tk.sample_manifest().plaintext_sha256.upper()
    ),
    "fractional seconds": _edit("10:15:00Z", "10:15:00.0Z"),
    "offset instead of Z": _edit("10:15:00Z", "10:15:00+00:00"),
    "lower-case t": _edit("2026-11-25T10", "2026-11-25t10"),
    "impossible date": _edit("retain-until: 2027-11-25", "retain-until: 2027-02-30"),
    "retain before created": _edit("retain-until: 2027-11-25", "retain-until: 2026-11-24"),
    "supersedes not lower": _edit("supersedes: 2", "supersedes: 3"),
    "supersedes alone": _edit("supersedes-complaint: CR-2026-0042\n", ""),
    "media type upper": _edit("text/csv", "Text/CSV"),
    "media type parameter": _edit("text/csv", "text/csv;charset=utf-8"),
    "sender id upper": _edit("sender: essex-cc", "sender: Essex-cc"),
    "delivery id upper": _edit("dl-5f0c", "dl-5F0C"),
    "fingerprint padded": _edit(
        tk.SENDER_KEY.public_key.fingerprint, tk.SENDER_KEY.public_key.fingerprint + "="
    ),
    "version 2": _edit("exchange-manifest/v1", "exchange-manifest/v2"),
    "receipt magic": _edit("exchange-manifest/v1", "exchange-receipt/v1"),
    "no magic": BODY[len(b"exchange-manifest/v1\n") :],
    "utf-8 bom": b"\xef\xbb\xbf" + BODY,
    "control in file name": _edit("file-name: mash", "file-name: %0Amash"),
    "bidi override in file name": _edit("file-name: mash", "file-name: %E2%80%AEmash"),
    "slash in file name": _edit("file-name: mash", "file-name: ../mash"),
    "dot-dot file name": _edit("file-name: mash referrals 2026-11.csv", "file-name: .."),
}


@pytest.mark.parametrize("body", list(NON_CANONICAL.values()), ids=list(NON_CANONICAL))
def test_non_canonical_or_invalid_bodies_are_refused(body: bytes) -> None:
    """Each deviation from the canonical grammar is refused even with a valid signature."""
    assert body != BODY
    reason = _reason_of(_resign_body(body))
    assert reason in {Reason.MALFORMED, Reason.NOT_CANONICAL, Reason.UNSUPPORTED_VERSION}


def test_reasons_for_order_and_version() -> None:
    """Out-of-order and duplicate fields say not-canonical; another version says so."""
    assert _reason_of(_resign_body(NON_CANONICAL["fields swapped"])) == Reason.NOT_CANONICAL
    assert _reason_of(_resign_body(NON_CANONICAL["duplicate field"])) == Reason.NOT_CANONICAL
    assert _reason_of(_resign_body(NON_CANONICAL["version 2"])) == Reason.UNSUPPORTED_VERSION


# --- binding checks ----------------------------------------------------------------------------


def test_unknown_sender_is_refused() -> None:
    """A manifest from a sender we have no pinned key for is refused."""
    assert _reason_of(SIGNED, senders={}) == Reason.UNKNOWN_SIGNER


def test_signed_by_another_partners_key_is_refused() -> None:
    """A manifest naming essex-cc but signed by essex-police's key is refused."""
    forged = sign_manifest(
        tk.sample_manifest(sender_key=tk.OTHER_KEY.public_key.fingerprint), tk.OTHER_KEY
    )
    assert _reason_of(forged) == Reason.KEY_MISMATCH


def test_wrong_recipient_is_refused() -> None:
    """A manifest addressed to another partner, or to our id with another key, is refused."""
    to_police = sign_manifest(tk.sample_manifest(recipient="essex-police"), tk.SENDER_KEY)
    assert _reason_of(to_police) == Reason.WRONG_RECIPIENT
    other_key = tk.sample_manifest(recipient_key=tk.OTHER_KEY.public_key.fingerprint)
    assert _reason_of(sign_manifest(other_key, tk.SENDER_KEY)) == Reason.WRONG_RECIPIENT


def test_agreement_not_shared_is_refused() -> None:
    """A manifest under an agreement the sender does not share with us is refused."""
    assert _reason_of(SIGNED, senders=tk.senders(agreements=("other",))) == (
        Reason.AGREEMENT_NOT_SHARED
    )
    police = sign_manifest(tk.sample_manifest(agreement="police-dv"), tk.SENDER_KEY)
    assert _reason_of(police) == Reason.AGREEMENT_NOT_SHARED


@pytest.mark.parametrize(("last", "accepted"), [(None, True), (41, True), (42, False), (99, False)])
def test_sequence_replay(last: int | None, accepted: bool) -> None:
    """Sequence 42 is accepted after nothing or 41, and refused as a replay after 42 or more."""
    if accepted:
        assert _open(SIGNED, senders=tk.senders(last_sequence=last)).value.sequence == 42
    else:
        assert _reason_of(SIGNED, senders=tk.senders(last_sequence=last)) == Reason.REPLAY


def test_check_payload() -> None:
    """Matching hashes pass; a different ciphertext, plaintext or size is refused."""
    manifest = tk.sample_manifest()
    check_payload(
        manifest,
        ciphertext_sha256=hashlib.sha256(tk.CIPHERTEXT).hexdigest(),
        plaintext_sha256=hashlib.sha256(tk.PLAINTEXT).hexdigest(),
        plaintext_size=len(tk.PLAINTEXT),
    )
    cases = [
        ({"ciphertext_sha256": "0" * 64}, Reason.CIPHERTEXT_MISMATCH),
        ({"plaintext_sha256": "0" * 64}, Reason.PLAINTEXT_MISMATCH),
        ({"plaintext_size": len(tk.PLAINTEXT) + 1}, Reason.PLAINTEXT_MISMATCH),
    ]
    for kwargs, reason in cases:
        with pytest.raises(ManifestRejected) as raised:
            check_payload(manifest, **kwargs)  # type: ignore[arg-type]
        assert raised.value.reason == reason


def test_errors_are_format_errors() -> None:
    """Refusals are ManifestError/SignatureError (FormatError, exit code 5) with a reason."""
    with pytest.raises(ManifestError) as raised:
        _open(SIGNED, senders={})
    assert isinstance(raised.value, FormatError)
    with pytest.raises(SignatureError):
        _open(BODY + SIGNED[len(BODY) :].replace(b"signature: ", b"signature: A"))


def test_signing_with_the_wrong_key_is_a_bug() -> None:
    """Signing a manifest whose sender-key is not the signing key's fingerprint is refused."""
    with pytest.raises(InvariantError):
        sign_manifest(tk.sample_manifest(), tk.OTHER_KEY)


# --- value rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "/etc/passwd",
        "new\nline.csv",
        "nul\x00.csv",
        "del\x7f.csv",
        "c1\x85.csv",
        "rtl\u202ecsv.exe",
        "iso\u2066x",
        "ls\u2028x",
        "\ufeffbom.csv",
        "x" * 256,
        "é" * 128,
        "lone\udcff.csv",
    ],
)
def test_bad_file_names_are_refused(name: str) -> None:
    """File names that are paths, empty, too long, or carry control/bidi characters are refused."""
    with pytest.raises(ValueError, match="file-name"):
        tk.sample_manifest(file_name=name)


@pytest.mark.parametrize(
    "name",
    [".hidden.csv", "-leading-dash.csv", " spaces .csv", "x" * 255, "é" * 127, "Référé 100%.xlsx"],
)
def test_odd_but_allowed_file_names_round_trip(name: str) -> None:
    """Legal but odd file names survive the encoding exactly."""
    manifest = tk.sample_manifest(file_name=name)
    assert Manifest.decode(manifest.encode()).file_name == name


def test_percent_encoding_examples() -> None:
    """Spaces inside stay literal, edge spaces, '%', and non-ASCII are %XX upper-case."""
    assert canonical.encode_text(" a b ") == "%20a b%20"
    assert canonical.encode_text("100%") == "100%25"
    assert canonical.encode_text("Barnardo’s") == "Barnardo%E2%80%99s"
    assert canonical.decode_text("Barnardo%E2%80%99s") == "Barnardo’s"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dataset_version", 0),
        ("dataset_version", True),
        ("sequence", 2**63),
        ("plaintext_size", -1),
        ("created", datetime(2026, 1, 1)),
        ("created", datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC)),
        ("retain_until", datetime(2027, 1, 1, tzinfo=UTC)),
        ("purpose", ""),
        ("purpose", "x" * 1001),
        ("classification", "x" * 65),
        ("media_type", "text/csv; charset=utf-8"),
        ("sender", "e"),
        ("sender_key", "ed25519:abc"),
    ],
)
def test_bad_values_are_refused_at_construction(field: str, value: object) -> None:
    """Constructing a manifest with an out-of-range or ill-typed value raises ValueError."""
    with pytest.raises(ValueError, match=field.replace("_", "-").split("-")[0]):
        tk.sample_manifest(**{field: value})


# --- receipts ---------------------------------------------------------------------------------


def _receipt_signed(**changes: object) -> bytes:
    manifest_sha256 = str(changes.pop("manifest_sha256", MANIFEST_SHA))
    return sign_receipt(tk.sample_receipt(manifest_sha256, **changes), tk.RECIPIENT_KEY)


def _open_receipt(signed: bytes, **kwargs: object) -> Opened[Receipt]:
    options: dict[str, object] = {
        "recipients": {tk.RECIPIENT: tk.RECIPIENT_KEY.public_key},
        "me": tk.SENDER,
        "sent": lambda delivery: (
            tk.sent_record(MANIFEST_SHA) if delivery == tk.sample_manifest().delivery else None
        ),
    }
    options.update(kwargs)
    return open_receipt(signed, **options)  # type: ignore[arg-type]


def _receipt_reason(signed: bytes, **kwargs: object) -> Reason:
    with pytest.raises((ManifestRejected, SignatureRejected)) as raised:
        _open_receipt(signed, **kwargs)
    error = raised.value
    assert isinstance(error, ManifestRejected | SignatureRejected)
    return error.reason


def test_receipt_round_trip_from_opened_manifest() -> None:
    """The recipient's receipt for an opened manifest verifies at the sender."""
    opened = _open(SIGNED)
    receipt = Receipt.for_delivery(
        opened,
        status=Status.REPLACED,
        time=datetime(2026, 11, 25, 10, 20, 5, 123, tzinfo=UTC),
        plaintext_sha256=hashlib.sha256(tk.PLAINTEXT).hexdigest(),
    )
    assert receipt == tk.sample_receipt(MANIFEST_SHA)
    signed = sign_receipt(receipt, tk.RECIPIENT_KEY)
    assert _open_receipt(signed).value == receipt
    assert Receipt.decode(receipt.encode()) == receipt


def test_rejected_receipt_round_trip() -> None:
    """A rejection carries a reason code and may omit the plaintext hash."""
    signed = _receipt_signed(
        status=Status.REJECTED, reason=Reason.DECRYPTION_FAILED, plaintext_sha256=None
    )
    assert b"reason: decryption-failed\n" in signed
    assert _open_receipt(signed).value.reason == Reason.DECRYPTION_FAILED


@pytest.mark.parametrize(
    "changes",
    [
        {"status": Status.REJECTED},
        {"reason": Reason.REPLAY},
        {"status": Status.REJECTED, "reason": Reason.UNKNOWN_DELIVERY},
        {"plaintext_sha256": None},
    ],
)
def test_receipt_status_rules(changes: dict[str, object]) -> None:
    """Reason only with rejected, from the receipt vocabulary; plaintext hash unless rejected."""
    with pytest.raises(ValueError, match=r"reason|plaintext"):
        tk.sample_receipt(MANIFEST_SHA, **changes)


def test_receipt_reason_vocabulary() -> None:
    """Receipt reasons are the recipient-side refusal codes only."""
    assert Reason.UNKNOWN_DELIVERY not in RECEIPT_REASONS
    assert Reason.DECRYPTION_FAILED in RECEIPT_REASONS


def test_forged_receipts_are_refused() -> None:
    """Unknown key, wrong key, wrong manifest, wrong agreement/partner, unknown delivery."""
    good = _receipt_signed()
    assert _receipt_reason(good, recipients={}) == Reason.UNKNOWN_SIGNER
    by_police = sign_receipt(
        tk.sample_receipt(MANIFEST_SHA, recipient_key=tk.OTHER_KEY.public_key.fingerprint),
        tk.OTHER_KEY,
    )
    assert _receipt_reason(by_police) == Reason.KEY_MISMATCH
    other_manifest = _receipt_signed(manifest_sha256="0" * 64)
    assert _receipt_reason(other_manifest) == Reason.RECEIPT_MISMATCH
    other_plaintext = _receipt_signed(plaintext_sha256="0" * 64)
    assert _receipt_reason(other_plaintext) == Reason.RECEIPT_MISMATCH
    other_agreement = _receipt_signed(agreement="police-dv")
    assert _receipt_reason(other_agreement) == Reason.RECEIPT_MISMATCH
    police_for_x = sign_receipt(
        tk.sample_receipt(
            MANIFEST_SHA,
            recipient="essex-police",
            recipient_key=tk.OTHER_KEY.public_key.fingerprint,
        ),
        tk.OTHER_KEY,
    )
    recipients = {
        tk.RECIPIENT: tk.RECIPIENT_KEY.public_key,
        "essex-police": tk.OTHER_KEY.public_key,
    }
    assert _receipt_reason(police_for_x, recipients=recipients) == Reason.RECEIPT_MISMATCH
    assert _receipt_reason(good, sent=lambda _d: None) == Reason.UNKNOWN_DELIVERY
    assert _receipt_reason(good, me="thurrock-council") == Reason.WRONG_RECIPIENT


def test_receipt_tampering_and_encoding() -> None:
    """Tampered fields, truncation, oversize and non-canonical receipts are refused."""
    good = _receipt_signed()
    tampered = good.replace(b"status: replaced", b"status: accepted")
    assert _receipt_reason(tampered) == Reason.BAD_SIGNATURE
    for size in range(len(good)):
        with pytest.raises((ManifestRejected, SignatureRejected)):
            _open_receipt(good[:size])
    assert _receipt_reason(good + b" " * RECEIPT_MAX_SIZE) == Reason.TOO_LARGE
    body = good[: good.index(b"signature: ")]
    crlf = body.replace(b"\n", b"\r\n")
    resigned = crlf + b"signature: " + base64.b64encode(tk.RECIPIENT_KEY.sign(crlf)) + b"\n"
    assert _receipt_reason(resigned) == Reason.MALFORMED
    manifest_as_receipt = SIGNED
    assert _receipt_reason(manifest_as_receipt) in {Reason.MALFORMED, Reason.TOO_LARGE}


def test_manifest_signature_does_not_verify_as_receipt() -> None:
    """Domain separation: the magic lines differ, so no document is valid as the other kind."""
    with pytest.raises(ManifestRejected):
        Receipt.decode(BODY)
    with pytest.raises(ManifestRejected):
        Manifest.decode(tk.sample_receipt(MANIFEST_SHA).encode())


def test_manifest_hash_ignores_the_signature_line() -> None:
    """The manifest hash is over the body only, so dedupe by hash survives re-signing."""
    opened = _open(SIGNED)
    assert opened.sha256 == hashlib.sha256(SIGNED[: SIGNED.index(b"signature: ")]).hexdigest()


@st.composite
def receipts(draw: st.DrawFn) -> Receipt:
    status = draw(st.sampled_from(Status))
    rejected = status is Status.REJECTED
    return Receipt(
        delivery="dl-" + draw(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)),
        manifest_sha256=draw(_hex64),
        plaintext_sha256=draw(st.none() | _hex64) if rejected else draw(_hex64),
        status=status,
        reason=draw(st.sampled_from(sorted(RECEIPT_REASONS, key=str))) if rejected else None,
        time=draw(_times),
        sender=draw(_ids),
        recipient=draw(_ids),
        recipient_key=draw(_fingerprints),
        agreement=draw(_ids),
    )


@given(receipts())
def test_receipt_decode_encode_round_trip(receipt: Receipt) -> None:
    """decode(encode(x)) == x for any valid receipt."""
    assert Receipt.decode(receipt.encode()) == receipt


RECEIPT_BODY = tk.sample_receipt(MANIFEST_SHA).encode()


@settings(max_examples=300)
@given(st.tuples(st.integers(0, len(RECEIPT_BODY) - 1), st.binary(max_size=3), st.integers(0, 3)))
def test_every_receipt_body_that_decodes_re_encodes_identically(
    edit: tuple[int, bytes, int],
) -> None:
    """encode(decode(b)) == b for every mutated receipt body that decodes."""
    at, insert, drop = edit
    body = RECEIPT_BODY[:at] + insert + RECEIPT_BODY[at + drop :]
    try:
        receipt = Receipt.decode(body)
    except ManifestRejected as error:
        assert error.reason in {Reason.MALFORMED, Reason.NOT_CANONICAL, Reason.UNSUPPORTED_VERSION}
    else:
        assert receipt.encode() == body
