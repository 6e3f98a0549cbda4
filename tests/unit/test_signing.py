"""Ed25519 keys, signatures and fingerprints, and SSH public keys (exchange.signing)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from exchange import signing
from exchange.errors import KeyFileError, SignatureError
from exchange.signing import (
    KeyRejected,
    PublicKey,
    Reason,
    SignatureRejected,
    parse_public_key,
    parse_ssh_public_key,
    signing_key_from_seed,
)

# RFC 8032 §7.1, TEST 1 and TEST 2.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
RFC2_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC2_SIG_72 = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)

# The small-order encodings as published (libsodium's blocklist, Chalkias et al. 2020,
# "Taming the many EdDSAs", Table 6), written out here independently of the module's list:
# the eight small-order points, then the non-canonical encodings (x = 0 with the sign bit
# set, and y >= p).
SMALL_ORDER_CANONICAL = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity, order 1
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
]
SMALL_ORDER_NON_CANONICAL = [
    "0100000000000000000000000000000000000000000000000000000000000080",  # identity, -0
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # order 2, -0
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # y = p, sign set
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # y = p + 1, sign set
]
SMALL_ORDER_ALL = SMALL_ORDER_CANONICAL + SMALL_ORDER_NON_CANONICAL


def _encode_point(point: tuple[int, int, int, int]) -> bytes:
    p = 2**255 - 19
    zinv = pow(point[2], p - 2, p)
    x, y = point[0] * zinv % p, point[1] * zinv % p
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def test_rfc8032_known_answer() -> None:
    """The key and signature for the RFC 8032 test 1 seed match the RFC."""
    key = signing_key_from_seed(RFC_SEED)
    assert key.public_key.raw == RFC_PUBLIC
    assert key.sign(b"") == RFC_SIG_EMPTY
    key.public_key.verify(b"", RFC_SIG_EMPTY)


def test_rfc8032_test2_verifies() -> None:
    """RFC 8032 test 2's signature over the one byte 0x72 verifies with its public key."""
    PublicKey(RFC2_PUBLIC).verify(b"\x72", RFC2_SIG_72)


def test_small_order_list_matches_the_literature() -> None:
    """The module refuses by name exactly the 14 published small-order encodings."""
    assert {bytes.fromhex(h) for h in SMALL_ORDER_ALL} == signing.SMALL_ORDER_ENCODINGS


@pytest.mark.parametrize("hex_key", SMALL_ORDER_ALL)
def test_small_order_keys_are_refused(hex_key: str) -> None:
    """Each small-order encoding, canonical or not, is refused as raw bytes and as text."""
    raw = bytes.fromhex(hex_key)
    with pytest.raises(KeyRejected) as raised:
        PublicKey(raw)
    assert raised.value.reason == Reason.SMALL_ORDER_KEY
    text = "ed25519:" + base64.b64encode(raw).decode()
    with pytest.raises(KeyRejected) as raised:
        parse_public_key(text)
    assert raised.value.reason == Reason.SMALL_ORDER_KEY


def test_identity_key_would_accept_a_trivial_signature_without_the_check() -> None:
    """The backend alone verifies (R = identity, S = 0) for any message under key 01 00..00."""
    identity = bytes.fromhex(SMALL_ORDER_CANONICAL[0])
    trivial = identity + bytes(32)
    Ed25519PublicKey.from_public_bytes(identity).verify(trivial, b"any message at all")
    with pytest.raises(KeyRejected):
        PublicKey(identity)


@pytest.mark.parametrize("torsion_hex", SMALL_ORDER_CANONICAL[1:])
def test_mixed_order_key_is_refused(torsion_hex: str) -> None:
    """A valid key plus a small-order point (a key with a torsion component) is refused."""
    good = signing_key_from_seed(RFC_SEED).public_key.raw
    point = signing._decode_point(good)
    torsion = signing._decode_point(bytes.fromhex(torsion_hex))
    assert point is not None
    assert torsion is not None
    mixed = _encode_point(signing._add(point, torsion))
    with pytest.raises(KeyRejected) as raised:
        PublicKey(mixed)
    assert raised.value.reason == Reason.SMALL_ORDER_KEY


@pytest.mark.parametrize("offset", range(19))
def test_every_encoding_with_y_at_least_p_is_refused(offset: int) -> None:
    """Every y >= p (y = p + 0 .. p + 18, both sign bits) is refused, small order or not."""
    for sign in (0, 1):
        raw = ((2**255 - 19 + offset) | (sign << 255)).to_bytes(32, "little")
        with pytest.raises(KeyRejected):
            PublicKey(raw)


def test_point_off_the_curve_is_refused() -> None:
    """An encoding whose y gives no x on the curve (y = 2) is refused as malformed."""
    with pytest.raises(KeyRejected) as raised:
        PublicKey((2).to_bytes(32, "little"))
    assert raised.value.reason == Reason.MALFORMED_KEY


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ed25519:",
        "ED25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "ed25519: 11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo",  # padding missing
        "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURp=",  # non-zero padding bits
        "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=",  # url-safe alphabet
        "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n",
        "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHUQ==",  # 31 bytes
        "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURoA",  # 33 bytes
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",
    ],
)
def test_malformed_public_key_text_is_refused(text: str) -> None:
    """Anything but the one canonical 'ed25519:<base64 of 32 bytes>' form is refused."""
    with pytest.raises(KeyRejected) as raised:
        parse_public_key(text)
    assert raised.value.reason == Reason.MALFORMED_KEY
    assert isinstance(raised.value, KeyFileError)


def test_public_key_text_round_trip_and_fingerprint() -> None:
    """The text form parses back to the same key; the fingerprint is sha256 of the raw bytes."""
    key = PublicKey(RFC_PUBLIC)
    assert key.text == "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    assert key == parse_public_key(key.text)
    digest = base64.b64encode(hashlib.sha256(RFC_PUBLIC).digest()).decode().rstrip("=")
    assert "SHA256:" + digest == key.fingerprint
    assert signing.is_fingerprint(key.fingerprint)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SHA256:",
        "sha256:" + "A" * 43,
        "SHA256:" + "A" * 42,
        "SHA256:" + "A" * 44,
        "SHA256:" + "A" * 42 + "B",  # non-zero trailing bits
        "SHA256:" + "A" * 42 + "A=",
        "MD5:" + "A" * 43,
    ],
)
def test_malformed_fingerprints_are_not_fingerprints(text: str) -> None:
    """Fingerprints must be 'SHA256:' plus the canonical unpadded base64 of 32 bytes."""
    assert not signing.is_fingerprint(text)


@given(st.binary(min_size=32, max_size=32))
def test_any_32_bytes_are_refused_or_round_trip(raw: bytes) -> None:
    """Every 32-byte string is either refused with a reason or round-trips through text."""
    try:
        key = PublicKey(raw)
    except KeyRejected as error:
        assert error.reason in {Reason.MALFORMED_KEY, Reason.SMALL_ORDER_KEY}
    else:
        assert key == parse_public_key(key.text)


def test_sign_verify_and_tampering() -> None:
    """A signature verifies over its message and fails for any other message or bit flip."""
    key = signing_key_from_seed(bytes(range(32)))
    message = b"exchange-manifest/v1\nsequence: 1\n"
    signature = key.sign(message)
    key.public_key.verify(message, signature)
    with pytest.raises(SignatureRejected) as raised:
        key.public_key.verify(message + b"x", signature)
    assert raised.value.reason == Reason.BAD_SIGNATURE
    assert isinstance(raised.value, SignatureError)
    for index in (0, 31, 32, 63):
        flipped = bytearray(signature)
        flipped[index] ^= 0x01
        with pytest.raises(SignatureRejected):
            key.public_key.verify(message, bytes(flipped))


def test_signature_by_another_key_fails() -> None:
    """A signature made by one key does not verify under another."""
    one, two = signing_key_from_seed(bytes(32)), signing_key_from_seed(bytes([1]) * 32)
    with pytest.raises(SignatureRejected) as raised:
        two.public_key.verify(b"m", one.sign(b"m"))
    assert raised.value.reason == Reason.BAD_SIGNATURE


@pytest.mark.parametrize("multiple", [1, 2, 15])
def test_malleated_signature_s_plus_l_is_refused(multiple: int) -> None:
    """The second encoding S + kL of a valid signature is refused as malformed."""
    key = signing_key_from_seed(RFC_SEED)
    signature = key.sign(b"m")
    s = int.from_bytes(signature[32:], "little") + multiple * signing.L
    if s >= 2**256:
        pytest.fail("test multiple too large")
    with pytest.raises(SignatureRejected) as raised:
        key.public_key.verify(b"m", signature[:32] + s.to_bytes(32, "little"))
    assert raised.value.reason == Reason.MALFORMED_SIGNATURE


@pytest.mark.parametrize("size", [0, 63, 65, 128])
def test_signature_of_wrong_length_is_refused(size: int) -> None:
    """Signatures that are not exactly 64 bytes are refused as malformed."""
    key = signing_key_from_seed(RFC_SEED)
    with pytest.raises(SignatureRejected) as raised:
        key.public_key.verify(b"m", bytes(size))
    assert raised.value.reason == Reason.MALFORMED_SIGNATURE


def test_pem_round_trip() -> None:
    """A signing key survives PKCS#8 PEM and keeps its public key."""
    key = signing.generate_signing_key()
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert key.public_key == signing.load_signing_key_pem(pem).public_key


def test_signing_key_repr_hides_key_material() -> None:
    """The repr of a signing key shows no PEM or seed bytes."""
    key = signing_key_from_seed(RFC_SEED)
    assert RFC_SEED.hex() not in repr(key)
    assert "PRIVATE" not in repr(key)


def _rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted_pem() -> bytes:
    return signing_key_from_seed(RFC_SEED)._key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


@pytest.mark.parametrize(
    "make",
    [lambda: b"", lambda: b"not a pem", _rsa_pem, _encrypted_pem],
    ids=["empty", "garbage", "rsa", "encrypted"],
)
def test_bad_signing_key_pem_is_refused(make: object) -> None:
    """Empty, garbage, non-Ed25519 and passphrase-protected PEM files are refused."""
    assert callable(make)
    with pytest.raises(KeyRejected) as raised:
        signing.load_signing_key_pem(make())
    assert raised.value.reason == Reason.MALFORMED_KEY


def test_seed_of_wrong_length_is_refused() -> None:
    """A test seed must be exactly 32 bytes."""
    with pytest.raises(KeyRejected):
        signing_key_from_seed(bytes(31))


# --- SSH ------------------------------------------------------------------------------------


def test_generated_ssh_keypair_parses_back() -> None:
    """A generated SSH key pair has an OpenSSH private key and a parseable public line."""
    private, public = signing.generate_ssh_keypair("essex-county-council@hub")
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    parsed = parse_ssh_public_key(public)
    assert parsed.key_type == "ssh-ed25519"
    assert parsed.comment == "essex-county-council@hub"
    assert public == parsed.line
    loaded = serialization.load_ssh_private_key(private, password=None)
    expected = loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert expected.decode() + " essex-county-council@hub" == public


@pytest.mark.parametrize("comment", ["", "two  spaces", "new\nline", " lead", "tab\there"])
def test_ssh_key_comment_must_be_simple(comment: str) -> None:
    """Comments with control characters, empty or oddly spaced, are refused."""
    with pytest.raises(KeyRejected):
        signing.generate_ssh_keypair(comment)


def test_ssh_fingerprint_is_sha256_of_blob() -> None:
    """The SSH fingerprint is 'SHA256:' plus unpadded base64 of sha256 of the wire blob."""
    _, public = signing.generate_ssh_keypair("x")
    blob = base64.b64decode(public.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert "SHA256:" + digest == signing.ssh_fingerprint(public)


def _openssh_line(key: object) -> str:
    assert isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey))
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def test_host_key_types() -> None:
    """ECDSA and RSA >= 3072 are accepted as host keys only; RSA 2048 is refused."""
    ecdsa = _openssh_line(ec.generate_private_key(ec.SECP256R1()).public_key())
    rsa3072 = _openssh_line(rsa.generate_private_key(65537, 3072).public_key())
    rsa2048 = _openssh_line(rsa.generate_private_key(65537, 2048).public_key())
    assert parse_ssh_public_key(ecdsa, host_key=True).key_type == "ecdsa-sha2-nistp256"
    assert parse_ssh_public_key(rsa3072, host_key=True).key_type == "ssh-rsa"
    for line in (ecdsa, rsa3072):
        with pytest.raises(KeyRejected):
            parse_ssh_public_key(line)
    with pytest.raises(KeyRejected):
        parse_ssh_public_key(rsa2048, host_key=True)


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _ssh_line_for(key_type: bytes, raw: bytes, line_type: str = "ssh-ed25519") -> str:
    blob = _ssh_string(key_type) + _ssh_string(raw)
    return f"{line_type} {base64.b64encode(blob).decode()}"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ssh-ed25519",
        "ssh-ed25519 ",
        "ssh-ed25519  AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",
        'from="*" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea',
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea x\ny",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea\r",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1E",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        _ssh_line_for(b"ssh-ed25519", RFC_PUBLIC[:31]),
        _ssh_line_for(b"ssh-rsa", RFC_PUBLIC),
        _ssh_line_for(b"ssh-ed25519", bytes.fromhex(SMALL_ORDER_CANONICAL[0])),
        _ssh_line_for(b"ssh-ed25519", RFC_PUBLIC) + "AA==",
    ],
)
def test_malformed_ssh_lines_are_refused(line: str) -> None:
    """Malformed, option-prefixed, mistyped, truncated or small-order SSH keys are refused."""
    with pytest.raises(KeyRejected):
        parse_ssh_public_key(line, host_key=True)


def test_ssh_line_for_rfc_key_parses() -> None:
    """The helper's well-formed line for a valid key parses (control for the cases above)."""
    parsed = parse_ssh_public_key(_ssh_line_for(b"ssh-ed25519", RFC_PUBLIC) + " c")
    assert parsed.comment == "c"
