"""Generate the manifest and receipt test vectors in this folder (FORMAT.md §11).

Run from the repository root: ``.venv/bin/python -m tests.vectors.generate``. The output is
deterministic (fixed TEST-ONLY keys, fixed times, deterministic Ed25519), and
``tests/unit/test_vectors.py`` fails if the committed files differ from what this writes.

Each vector is a ``name: value`` header, a blank line, then the document bytes. The expected
results are written here by hand from FORMAT.md, not taken from running the code.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from exchange.core.naming import hub_stem
from exchange.manifest import (
    Status,
    UnverifiedRejection,
    sign_manifest,
    sign_receipt,
    sign_unverified_rejection,
)
from exchange.signing import L, Reason
from tests.vectors import testkeys as tk

HERE = Path(__file__).parent
Vector = tuple[str, dict[str, str], bytes]

SIGNED = sign_manifest(tk.sample_manifest(), tk.SENDER_KEY)
BODY = tk.sample_manifest().encode()
MANIFEST_SHA = hashlib.sha256(BODY).hexdigest()
_SIG_LINE = SIGNED[len(BODY) :]
_IDENTITY_POINT = bytes.fromhex("01" + "00" * 31)


def _manifest_header(
    expect: str,
    comment: str,
    reason: Reason | None = None,
    *,
    last_sequence: str = "41",
    agreements: str = tk.AGREEMENT,
    sender_key: str | None = None,
) -> dict[str, str]:
    header = {"expect": expect}
    if reason is not None:
        header["reason"] = reason.value
    header |= {
        "kind": "manifest",
        "comment": comment,
        "sender": tk.SENDER,
        "sender key": sender_key or tk.SENDER_KEY.public_key.text,
        "sender agreements": agreements,
        "last sequence": last_sequence,
        "recipient": tk.RECIPIENT,
        "recipient key": tk.RECIPIENT_KEY.public_key.fingerprint,
    }
    return header


def _success(name: str, comment: str, signed: bytes) -> Vector:
    body = signed[: signed.rindex(b"signature: ")]
    header = _manifest_header("success", comment)
    header["manifest sha256"] = hashlib.sha256(body).hexdigest()
    return (name, header, signed)


def _resign(body: bytes) -> bytes:
    return body + b"signature: " + base64.b64encode(tk.SENDER_KEY.sign(body)) + b"\n"


def _edit(old: bytes, new: bytes, body: bytes = BODY) -> bytes:
    if old not in body:
        raise ValueError(f"vector edit: {old!r} not in body")
    return body.replace(old, new, 1)


def manifest_vectors() -> Iterator[Vector]:
    yield _success(
        "manifest_valid_correction",
        "a correction (dataset version 3 supersedes 2) from essex-cc to southend-uhft",
        SIGNED,
    )
    first = sign_manifest(tk.sample_manifest(correction=None, dataset_version=1), tk.SENDER_KEY)
    yield _success("manifest_valid_first_version", "a first version: no supersedes fields", first)
    odd = sign_manifest(tk.sample_manifest(file_name=" .Référé 100% – final .csv"), tk.SENDER_KEY)
    yield _success(
        "manifest_valid_odd_file_name",
        "file name with edge spaces, leading dot, %, and non-ASCII: all percent-encoded",
        odd,
    )

    sig = base64.b64decode(_SIG_LINE[11:-1])
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    s_plus_l = sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")
    line = _SIG_LINE[11:-1]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sibling = alphabet[alphabet.index(line[-3:-2]) ^ 1 :][:1]
    failures: list[tuple[str, str, str, Reason, bytes, dict[str, str]]] = [
        ("manifest_tampered_purpose", "signature failure", "purpose changed after signing",
         Reason.BAD_SIGNATURE,
         _edit(b"purpose: Safeguarding children", b"purpose: Safeguarding adults") + _SIG_LINE, {}),
        ("manifest_tampered_signature", "signature failure", "one bit of R flipped",
         Reason.BAD_SIGNATURE, BODY + b"signature: " + base64.b64encode(flipped) + b"\n", {}),
        ("manifest_signature_s_plus_l", "signature failure",
         "malleated signature: S + L is the same signature numerically, refused",
         Reason.MALFORMED_SIGNATURE,
         BODY + b"signature: " + base64.b64encode(s_plus_l) + b"\n", {}),
        ("manifest_signature_noncanonical_base64", "signature failure",
         "the same signature bytes with non-zero base64 padding bits",
         Reason.MALFORMED_SIGNATURE, BODY + b"signature: " + line[:-3] + sibling + b"==\n", {}),
        ("manifest_signed_by_other_partner", "signature failure",
         "sender-key and signature are essex-police's, sender is essex-cc", Reason.KEY_MISMATCH,
         sign_manifest(tk.sample_manifest(sender_key=tk.OTHER_KEY.public_key.fingerprint),
                       tk.OTHER_KEY), {}),
        ("manifest_unknown_sender", "signature failure", "sender thurrock-council is not pinned",
         Reason.UNKNOWN_SIGNER,
         _resign(_edit(b"sender: essex-cc", b"sender: thurrock-council")), {}),
        ("manifest_wrong_recipient", "wrong recipient", "addressed to essex-police",
         Reason.WRONG_RECIPIENT,
         sign_manifest(tk.sample_manifest(recipient="essex-police"), tk.SENDER_KEY), {}),
        ("manifest_wrong_recipient_key", "wrong recipient",
         "our id but another key's fingerprint", Reason.WRONG_RECIPIENT,
         sign_manifest(tk.sample_manifest(recipient_key=tk.OTHER_KEY.public_key.fingerprint),
                       tk.SENDER_KEY), {}),
        ("manifest_agreement_not_shared", "manifest failure",
         "agreement police-dv is not one essex-cc sends to us under",
         Reason.AGREEMENT_NOT_SHARED,
         sign_manifest(tk.sample_manifest(agreement="police-dv"), tk.SENDER_KEY), {}),
        ("manifest_replay_same_sequence", "replay", "sequence 42 after 42 was accepted",
         Reason.REPLAY, SIGNED, {"last sequence": "42"}),
        ("manifest_replay_lower_sequence", "replay", "sequence 42 after 100 was accepted",
         Reason.REPLAY, SIGNED, {"last sequence": "100"}),
        ("manifest_fields_out_of_order", "manifest failure", "classification before agreement",
         Reason.NOT_CANONICAL, _resign(_swap_lines(b"agreement", b"classification")), {}),
        ("manifest_duplicate_field", "manifest failure", "sequence twice",
         Reason.NOT_CANONICAL, _resign(BODY + b"sequence: 42\n"), {}),
        ("manifest_unknown_field", "manifest failure", "an extra field 'priority'",
         Reason.MALFORMED, _resign(_edit(b"purpose: ", b"priority: high\npurpose: ")), {}),
        ("manifest_crlf", "manifest failure", "CRLF line endings", Reason.MALFORMED,
         _resign(BODY.replace(b"\n", b"\r\n")), {}),
        ("manifest_trailing_space", "manifest failure", "a space after a value",
         Reason.MALFORMED, _resign(_edit(b"sequence: 42\n", b"sequence: 42 \n")), {}),
        ("manifest_leading_zero", "manifest failure", "sequence 042", Reason.MALFORMED,
         _resign(_edit(b"sequence: 42\n", b"sequence: 042\n")), {}),
        ("manifest_lowercase_percent", "manifest failure", "%c2%a7 instead of %C2%A7",
         Reason.MALFORMED, _resign(_edit(b"%C2%A7", b"%c2%a7")), {}),
        ("manifest_needless_percent", "manifest failure", "'m' written as %6D",
         Reason.MALFORMED, _resign(_edit(b"file-name: mash", b"file-name: %6Dash")), {}),
        ("manifest_overlong_utf8", "manifest failure", "overlong UTF-8 %C0%AF for '/'",
         Reason.MALFORMED, _resign(_edit(b"file-name: mash", b"file-name: %C0%AFmash")), {}),
        ("manifest_bidi_file_name", "manifest failure", "U+202E RIGHT-TO-LEFT OVERRIDE in name",
         Reason.MALFORMED, _resign(_edit(b"file-name: mash", b"file-name: %E2%80%AEmash")), {}),
        ("manifest_path_file_name", "manifest failure", "file name with a slash",
         Reason.MALFORMED, _resign(_edit(b"file-name: mash", b"file-name: ../../mash")), {}),
        ("manifest_supersedes_incomplete", "manifest failure",
         "supersedes without supersedes-complaint", Reason.MALFORMED,
         _resign(_edit(b"supersedes-complaint: CR-2026-0042\n", b"")), {}),
        ("manifest_version_2", "manifest failure", "magic line exchange-manifest/v2",
         Reason.UNSUPPORTED_VERSION,
         _resign(_edit(b"exchange-manifest/v1", b"exchange-manifest/v2")), {}),
        ("manifest_too_large", "manifest failure", "16385 bytes: over the cap",
         Reason.TOO_LARGE, SIGNED + b"#" * (16385 - len(SIGNED)), {}),
        ("manifest_truncated", "manifest failure", "the signature line is missing",
         Reason.MALFORMED, BODY, {}),
        ("manifest_receipt_magic", "manifest failure", "a manifest body under the receipt magic",
         Reason.MALFORMED,
         _resign(_edit(b"exchange-manifest/v1", b"exchange-receipt/v1")), {}),
    ]  # fmt: skip
    for name, expect, comment, reason, payload, changes in failures:
        header = _manifest_header(expect, comment, reason)
        header.update(changes)
        yield name, header, payload

    trivial_body = tk.sample_manifest(sender_key=_fingerprint(_IDENTITY_POINT)).encode()
    trivial = trivial_body + b"signature: " + base64.b64encode(_IDENTITY_POINT + bytes(32)) + b"\n"
    yield (
        "key_small_order_sender",
        _manifest_header(
            "key failure",
            "the pinned sender key is the identity point: (R = identity, S = 0) would verify",
            Reason.SMALL_ORDER_KEY,
            sender_key="ed25519:" + base64.b64encode(_IDENTITY_POINT).decode(),
        ),
        trivial,
    )


def _fingerprint(raw: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def _swap_lines(a: bytes, b: bytes) -> bytes:
    lines = BODY.split(b"\n")
    i = next(n for n, x in enumerate(lines) if x.startswith(a + b": "))
    j = next(n for n, x in enumerate(lines) if x.startswith(b + b": "))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _receipt_header(expect: str, comment: str, reason: Reason | None = None) -> dict[str, str]:
    header = {"expect": expect}
    if reason is not None:
        header["reason"] = reason.value
    return header | {
        "kind": "receipt",
        "comment": comment,
        "me": tk.SENDER,
        "signer": tk.RECIPIENT,
        "signer key": tk.RECIPIENT_KEY.public_key.text,
        "delivery": tk.sample_manifest().delivery,
        "sent recipient": tk.RECIPIENT,
        "sent agreement": tk.AGREEMENT,
        "sent manifest sha256": MANIFEST_SHA,
        "sent plaintext sha256": hashlib.sha256(tk.PLAINTEXT).hexdigest(),
    }


def _receipt(**changes: object) -> bytes:
    key = changes.pop("key", tk.RECIPIENT_KEY)
    sha = str(changes.pop("manifest_sha256", MANIFEST_SHA))
    return sign_receipt(tk.sample_receipt(sha, **changes), key)  # type: ignore[arg-type]


def receipt_vectors() -> Iterator[Vector]:
    good = _receipt()
    body = good[: good.rindex(b"signature: ")]

    def resign(data: bytes) -> bytes:
        return data + b"signature: " + base64.b64encode(tk.RECIPIENT_KEY.sign(data)) + b"\n"

    yield (
        "receipt_valid_replaced",
        _receipt_header("success", "southend-uhft replaced version 2 with version 3"),
        good,
    )
    yield (
        "receipt_valid_rejected",
        _receipt_header(
            "success", "a rejection with reason decryption-failed and no plaintext hash"
        ),
        _receipt(status=Status.REJECTED, reason=Reason.DECRYPTION_FAILED, plaintext_sha256=None),
    )
    cases: list[tuple[str, str, str, Reason, bytes]] = [
        ("receipt_other_manifest", "receipt failure",
         "valid key, signature over another manifest hash", Reason.RECEIPT_MISMATCH,
         _receipt(manifest_sha256="0" * 64)),
        ("receipt_other_plaintext", "receipt failure", "accepted with another plaintext hash",
         Reason.RECEIPT_MISMATCH, _receipt(plaintext_sha256="1" * 64)),
        ("receipt_other_agreement", "receipt failure",
         "the delivery was under mash-weekly, the receipt names police-dv",
         Reason.RECEIPT_MISMATCH, _receipt(agreement="police-dv")),
        ("receipt_unknown_signer", "signature failure", "signed by essex-police, not pinned",
         Reason.UNKNOWN_SIGNER,
         _receipt(recipient="essex-police", recipient_key=tk.OTHER_KEY.public_key.fingerprint,
                  key=tk.OTHER_KEY)),
        ("receipt_signed_by_other_key", "signature failure",
         "names southend-uhft but signed by essex-police's key", Reason.KEY_MISMATCH,
         _receipt(recipient_key=tk.OTHER_KEY.public_key.fingerprint, key=tk.OTHER_KEY)),
        ("receipt_tampered_status", "signature failure", "status changed after signing",
         Reason.BAD_SIGNATURE,
         good.replace(b"status: replaced", b"status: accepted")),
        ("receipt_addressed_elsewhere", "wrong recipient", "sender thurrock-council, not us",
         Reason.WRONG_RECIPIENT, _receipt(sender="thurrock-council")),
        ("receipt_unknown_delivery", "receipt failure", "a delivery id we never sent",
         Reason.UNKNOWN_DELIVERY, _receipt(delivery="dl-" + "e" * 32)),
        ("receipt_fields_out_of_order", "receipt failure", "status before sender",
         Reason.NOT_CANONICAL,
         resign(body.replace(b"sender: essex-cc\nstatus: replaced\n",
                             b"status: replaced\nsender: essex-cc\n"))),
        ("receipt_unknown_reason", "receipt failure", "status rejected with a made-up reason",
         Reason.MALFORMED,
         resign(body.replace(b"recipient: ", b"reason: looked-wrong\nrecipient: ", 1)
                .replace(b"status: replaced", b"status: rejected"))),
        ("receipt_too_large", "receipt failure", "4097 bytes: over the cap", Reason.TOO_LARGE,
         good + b"#" * (4097 - len(good))),
        ("receipt_manifest_as_receipt", "receipt failure", "a signed manifest offered as receipt",
         Reason.MALFORMED, sign_manifest(tk.sample_manifest(correction=None, dataset_version=1,
                                                            purpose="x"), tk.SENDER_KEY)),
    ]  # fmt: skip
    for name, expect, comment, reason, payload in cases:
        yield name, _receipt_header(expect, comment, reason), payload


#: FORMAT.md §4.6: the hub name of the sample delivery, and a sealed manifest file's hash.
HUB_NAME = hub_stem(tk.sample_manifest().delivery)
SEALED_SHA = hashlib.sha256(b"the sealed manifest file as downloaded").hexdigest()


def _rejection(**changes: object) -> bytes:
    key = changes.pop("key", tk.RECIPIENT_KEY)
    values: dict[str, object] = {
        "hub_name": HUB_NAME,
        "manifest_file_sha256": SEALED_SHA,
        "claimed_delivery": tk.sample_manifest().delivery,
        "reason": Reason.BAD_SIGNATURE,
        "time": datetime(2026, 11, 25, 10, 21, 7, tzinfo=UTC),
        "sender": tk.SENDER,
        "recipient": tk.RECIPIENT,
        "recipient_key": tk.RECIPIENT_KEY.public_key.fingerprint,
    } | changes
    return sign_unverified_rejection(UnverifiedRejection(**values), key)  # type: ignore[arg-type]


def rejection_vectors() -> Iterator[Vector]:
    """Receipt version 2 (FORMAT.md §4.6, §5.3): ``signer`` is the partner whose folder the
    file lies in; the delivery is found by its hub name."""
    good = _rejection()
    body = good[: good.rindex(b"signature: ")]

    def resign(data: bytes) -> bytes:
        return data + b"signature: " + base64.b64encode(tk.RECIPIENT_KEY.sign(data)) + b"\n"

    claimed = f"claimed-delivery: {tk.sample_manifest().delivery}\n".encode()
    yield (
        "receipt_v2_valid_bad_signature",
        _receipt_header("success", "a manifest file that failed its signature, delivery claimed"),
        good,
    )
    yield (
        "receipt_v2_valid_decryption_failed",
        _receipt_header("success", "a manifest file that did not decrypt: no claimed delivery"),
        _rejection(claimed_delivery=None, reason=Reason.DECRYPTION_FAILED),
    )
    yield (
        "receipt_v2_delivery_to_other_partner",
        _receipt_header(
            "receipt failure",
            "the hub name is of a delivery made to essex-police, rejected by southend-uhft",
            Reason.RECEIPT_MISMATCH,
        )
        | {"sent recipient": tk.OTHER},
        good,
    )
    cases: list[tuple[str, str, str, Reason, bytes]] = [
        ("receipt_v2_unknown_hub_name", "receipt failure",
         "a hub name we never wrote (no delivery of ours has it)", Reason.UNKNOWN_DELIVERY,
         _rejection(hub_name="e" * 32, claimed_delivery=None)),
        ("receipt_v2_signed_by_other_partner", "signature failure",
         "essex-police signs a rejection found in southend-uhft's folder", Reason.UNKNOWN_SIGNER,
         _rejection(recipient=tk.OTHER, recipient_key=tk.OTHER_KEY.public_key.fingerprint,
                    key=tk.OTHER_KEY)),
        ("receipt_v2_signed_by_other_key", "signature failure",
         "names southend-uhft but signed by essex-police's key", Reason.KEY_MISMATCH,
         _rejection(recipient_key=tk.OTHER_KEY.public_key.fingerprint, key=tk.OTHER_KEY)),
        ("receipt_v2_tampered_reason", "signature failure", "reason changed after signing",
         Reason.BAD_SIGNATURE, good.replace(b"reason: bad-signature", b"reason: key-mismatch")),
        ("receipt_v2_addressed_elsewhere", "wrong recipient", "sender thurrock-council, not us",
         Reason.WRONG_RECIPIENT, _rejection(sender="thurrock-council")),
        ("receipt_v2_claimed_other_delivery", "receipt failure",
         "a claimed delivery whose hub name is not hub-name", Reason.MALFORMED,
         resign(body.replace(claimed, b"claimed-delivery: dl-" + b"e" * 32 + b"\n"))),
        ("receipt_v2_status_accepted", "receipt failure", "version 2 is only ever rejected",
         Reason.MALFORMED, resign(body.replace(b"status: rejected", b"status: accepted"))),
        ("receipt_v2_reason_replay", "receipt failure",
         "replay needs a verified manifest: not a version 2 reason", Reason.MALFORMED,
         resign(body.replace(b"reason: bad-signature", b"reason: replay"))),
        ("receipt_v2_with_agreement", "receipt failure",
         "an agreement field, which version 2 does not have", Reason.MALFORMED,
         resign(body.replace(b"exchange-receipt/v2\n", b"exchange-receipt/v2\nagreement: "
                             + tk.AGREEMENT.encode() + b"\n"))),
        ("receipt_v2_v1_receipt_under_v2", "receipt failure",
         "a version 1 receipt body under the version 2 magic line", Reason.MALFORMED,
         resign(_receipt()[: _receipt().rindex(b"signature: ")].replace(
             b"exchange-receipt/v1", b"exchange-receipt/v2"))),
        ("receipt_v2_as_v1", "receipt failure",
         "a version 2 body under the version 1 magic line", Reason.MALFORMED,
         resign(body.replace(b"exchange-receipt/v2", b"exchange-receipt/v1"))),
    ]  # fmt: skip
    for name, expect, comment, reason, payload in cases:
        yield name, _receipt_header(expect, comment, reason), payload


def all_vectors() -> dict[str, bytes]:
    """File name → file bytes for every vector."""
    out: dict[str, bytes] = {}
    for name, header, payload in (*manifest_vectors(), *receipt_vectors(), *rejection_vectors()):
        if name in out:
            raise ValueError(f"duplicate vector name {name}")
        lines = "".join(f"{key}: {value}\n" for key, value in header.items())
        out[name] = lines.encode("utf-8") + b"\n" + payload
    return out


def main() -> None:
    for old in HERE.iterdir():
        if old.name.startswith(("manifest_", "receipt_", "key_")):
            old.unlink()
    for name, data in all_vectors().items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(all_vectors())} vectors to {HERE}")


if __name__ == "__main__":
    main()
