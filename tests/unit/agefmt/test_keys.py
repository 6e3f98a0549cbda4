"""Keys: Bech32 encodings, the spec's example keys, identity and recipient files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange import agefmt
from exchange.agefmt import bech32
from exchange.errors import KeyFileError

# C2SP age.md, "The X25519 recipient type" and "The MLKEM768-X25519 ... recipient type".
SPEC_X25519_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_X25519_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
SPEC_PQ_IDENTITY = "AGE-SECRET-KEY-PQ-1XX76JRALNLXDMEW0CRK45QMCCH4X06SE84UN3VPM33W6HWDX0H3SK3ZQFR"
SPEC_PQ_RECIPIENT = (
    "age1pq1x34nzsvr0rxjsgdn8zgyhfe8j7ceq5r9rdelkjuh3y235jzxshfg87pzf5zrqtzdxz95paef6caq5aapd"
    "mwjjqpjfdyxnzr2zampc3uxy0dg4z2n2gm9su72p0pc3u0jvev55l694v78snxg3yzvcl7yda0eyytqj6a0ec477"
    "lnhcy5hzpz4zq3pxanve4cn62gqj3pjy5lqj9c6kyj4v2z8alktn8zh99970x79gjkv7522hv9kfz35zsnxhsx8w"
    "wtmu9cy3ftzjgwcp4sshn3llnylnpdsyz5jm72vefv4x5vfwytrefxg4wq3mv42wcrvkj742479zrxzpvp2p3e9f"
    "ed9f0739vcu80r7ma28qfhnvlv4gfzel9q654dj3zmuvvz893azhxdvs9fxd0r7jzchzcfcs5mkyyjxhw0n2z6dv"
    "p9yn9qfdp29h0azxqyjw6v7fhyuzj7zel0uq6j9rd7wgrpz7mf5dnj43jwsgvrc8qcnhy7tu6dkdujuxzkp9xj43"
    "xe8h92ktre2a3u3s8mm5mrp9nr9pwkgtz4mdlq9hgn4fps4k57ff6wddn2fy23t47sm20r8km8sd2pcyyafnet8f"
    "0dajsrlyjeah4n3mssr6aseevuuskdvq5lzguyvpgwpta742c6698vgutzqgny8usfg0w2he7kq5vyxjd0f9hqg8"
    "xk26y9e4th0gezq92q4cpp5p2y9hf5f2cje5l0c3sa3a2qxmm38pxxvhxh99yzmfz0zk7r2s64nnwjhkfgfr3gf8"
    "xnmppcgmaykvh5sh6g7vk9790rf8ws0axmr2t7z8aae5fq2029uvcn2ghgt4fu4wgwdc0k0cz52qkvwmuzj8p8k5"
    "jgf3xzk5zmrkavjekjrpeq408xz3zxazwkc6tyfmhayrkfpjhwtz5mp8j8guqe43k2q6m2kte03vrw27y3wmqyu5"
    "etmt9dnkwcnnpmu9gz9dekfhdevf42ucshphnrk38ra6hx8w5f8q5ru0xdhrjxmwqf6cused7zc5xvq43r0zscjg"
    "lpwlptpwydhqw64xz7ptjdyeyzpq2zkxtmzg29gzjpvzva4d3l0cenn9xs297wf4y4ukwrunf57xj6pm7nvrkwvt"
    "rt8hwcmgv8x7ajw7258ugf9wvkmk4052ekg87tw5vnx8nq2swyzv77v8yqlwsenvamr0zssknwts8rrhfuwj7yky"
    "snq9jxy0uv3kuyt22djszjdtvpz6d0s0kwh8ryynddzud92emeyvvyqktd0jtj7rvvg5gch25v8smlvny3kvn5ga"
    "gyz475ze2y6q466xqmz2n3hs77lddeqyta2nch5k2u5yacuk9ywnwfdzvyejnucz724hj77hrrmakm7pr3kxsrxq"
    "22ejexlud9fy2kdqmkg5yncz7jm5wv2qjk5w5kvcpqsry2yqffh2la52dxfjkjq5rzhjzeyn6dupn0qwtyv7s4lw"
    "g3xdarsdlwe2y3tujy480y7z39q259fzx6jhd2j0f5hagqpcpees7hzc2yrk5cy788uk3s7qvp5cpepx24gvws3m"
    "2g433exgwppnkjscec8qu4y9z9r7vccexjcjaen42245lmgmxmuavg9alej92322gvvyy2t6267v09ch64y0m53j"
    "ff0vjj96s0ypk60hr3jw4myd6m5hpn3xjstx7tl2szhpr5qe8jj08ydjc4wy2rch2fhuy3pdfjax5awe9j99ly5h"
    "kntzz9fe5zatgjvzdd0kgtxs25njnajyf6ssekp7gelxquusn4pt25czh3scj68kq79wdn5tgm6yvm9nzavrg043"
    "x3msnygf8dweknw5jmqd0uvny6ttsn09508k0c55zfnegrm9efhxpfqdkmhh6gjtqmwze9pyyzk3tlhl53k2ykx3"
    "qheyty7saeq0d3fzv49zc0k"
)


def test_spec_x25519_example_derives_its_recipient() -> None:
    """The spec's X25519 identity gives the spec's recipient, and both re-encode unchanged."""
    identity = agefmt.parse_identity(SPEC_X25519_IDENTITY)
    assert identity.to_string() == SPEC_X25519_IDENTITY
    assert identity.recipient().to_string() == SPEC_X25519_RECIPIENT
    assert agefmt.parse_recipient(SPEC_X25519_RECIPIENT).to_string() == SPEC_X25519_RECIPIENT


def test_spec_hybrid_example_derives_its_recipient() -> None:
    """The spec's post-quantum identity (a seed) expands to the spec's 1216-byte recipient."""
    identity = agefmt.parse_identity(SPEC_PQ_IDENTITY)
    assert isinstance(identity, agefmt.HybridIdentity)
    assert identity.to_string() == SPEC_PQ_IDENTITY
    assert identity.recipient().to_string() == SPEC_PQ_RECIPIENT
    recipient = agefmt.parse_recipient(SPEC_PQ_RECIPIENT)
    assert isinstance(recipient, agefmt.HybridRecipient)
    assert len(recipient.public) == 1216


def test_generated_keys_round_trip_through_strings() -> None:
    """Generated identities print as age-keygen does and parse back to equal values."""
    x = agefmt.generate_x25519_identity()
    pq = agefmt.generate_hybrid_identity()
    assert x.to_string().startswith("AGE-SECRET-KEY-1")
    assert pq.to_string().startswith("AGE-SECRET-KEY-PQ-1")
    assert x.recipient().to_string().startswith("age1")
    assert pq.recipient().to_string().startswith("age1pq1")
    assert agefmt.parse_identity(x.to_string()) == x
    assert agefmt.parse_identity(pq.to_string()) == pq
    assert agefmt.parse_recipient(pq.recipient().to_string()) == pq.recipient()


def test_identity_repr_does_not_leak_the_secret() -> None:
    """repr() of an identity shows its public key, never the secret."""
    for identity in (agefmt.generate_x25519_identity(), agefmt.generate_hybrid_identity()):
        assert identity.to_string() not in repr(identity)
        assert identity.to_string()[16:40] not in repr(identity)


@pytest.mark.parametrize(
    "text",
    [
        SPEC_X25519_RECIPIENT.upper(),  # recipients are lower case
        SPEC_X25519_RECIPIENT[:-1] + "q",  # checksum
        SPEC_X25519_RECIPIENT[:20] + SPEC_X25519_RECIPIENT[20:].upper(),  # mixed case
        "age1",
        "",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB/VsE7fp4bO",
        bech32.encode("age", bytes(31)),  # wrong length
        bech32.encode("age1tag", bytes(33)),  # a type we do not implement
        bech32.encode("age1pq", b"\xff" * 1216),  # ML-KEM coefficients out of range
        bech32.encode("age1pq", bytes(1215)),  # wrong length
    ],
)
def test_malformed_recipients_are_refused(text: str) -> None:
    """Anything but a canonical age1/age1pq1 recipient is a KeyFileError with a hint."""
    with pytest.raises(KeyFileError) as caught:
        agefmt.parse_recipient(text)
    assert caught.value.hint


@pytest.mark.parametrize(
    "text",
    [
        SPEC_X25519_IDENTITY.lower(),  # identities are upper case
        SPEC_X25519_IDENTITY[:-1] + "Q",
        SPEC_X25519_RECIPIENT,
        bech32.encode("AGE-SECRET-KEY-", bytes(16)),
        bech32.encode("AGE-PLUGIN-YUBIKEY-", bytes(16)),
    ],
)
def test_malformed_identities_are_refused_without_echo(text: str) -> None:
    """A bad identity is refused and the message never quotes it (it may be a secret)."""
    with pytest.raises(KeyFileError) as caught:
        agefmt.parse_identity(text)
    assert text not in caught.value.message
    assert text[15:30] not in caught.value.message


def test_identity_file_in_age_keygen_format() -> None:
    """Comments, blank lines and CRLF are ignored; every identity line is kept, in order."""
    pq = agefmt.generate_hybrid_identity()
    text = (
        "# created: 2026-11-25T10:00:00Z\r\n"
        f"# public key: {SPEC_X25519_RECIPIENT}\r\n"
        f"{SPEC_X25519_IDENTITY}\r\n"
        "\n"
        f"{pq.to_string()}\n"
    )
    identities = agefmt.parse_identity_file(text)
    assert [i.to_string() for i in identities] == [SPEC_X25519_IDENTITY, pq.to_string()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# nothing here\n\n", "no identities found"),
        (f"{SPEC_X25519_IDENTITY}\nAGE-SECRET-KEY-1XYZ\n", "keys/id.txt: line 2: malformed"),
        ("age-encryption.org/v1\n-> scrypt ...", "passphrase-encrypted"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\n", "SSH or PEM key"),
    ],
)
def test_identity_file_errors_name_file_and_line(text: str, message: str) -> None:
    """Identity-file errors say which file and line is wrong and how to fix it."""
    with pytest.raises(KeyFileError, match=message) as caught:
        agefmt.parse_identity_file(text, source="keys/id.txt")
    assert caught.value.message.startswith("keys/id.txt: ")
    assert caught.value.hint


def test_recipients_file() -> None:
    """A recipients file has one recipient per line with comments; errors give the line."""
    other = agefmt.generate_x25519_identity().recipient().to_string()
    parsed = agefmt.parse_recipients_file(f"# Essex Police\n{other}\n{SPEC_X25519_RECIPIENT}\n")
    assert [r.to_string() for r in parsed] == [other, SPEC_X25519_RECIPIENT]
    with pytest.raises(KeyFileError, match=r"partners\.txt: line 2: "):
        agefmt.parse_recipients_file(f"{other}\nage1oops\n", source="partners.txt")


# BIP 173 valid test vectors (checksums over the lower-case form).
BIP173_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
]


@pytest.mark.parametrize("text", BIP173_VALID)
def test_bech32_bip173_valid_vectors_decode(text: str) -> None:
    """BIP 173's valid strings decode, keeping the HRP's case as written."""
    hrp, _ = bech32.decode(text)
    assert text.startswith(hrp)


@pytest.mark.parametrize(
    "text",
    ["A1G7SGD8", "10a06t8", "1qzzfhee", "a12UEL5L", "x1b4n0q5v", "li1dgmt3", "de1lg7wt\xff"],
)
def test_bech32_bip173_invalid_vectors_are_refused(text: str) -> None:
    """BIP 173's invalid strings (bad checksum, empty HRP, mixed case, bad chars) fail."""
    with pytest.raises(bech32.Bech32Error):
        bech32.decode(text)


@given(
    hrp=st.sampled_from(["age", "age1pq", "AGE-SECRET-KEY-", "AGE-SECRET-KEY-PQ-"]),
    data=st.binary(max_size=200),
)
def test_bech32_round_trip(hrp: str, data: bytes) -> None:
    """decode(encode(hrp, data)) gives back the HRP and data, for any length (no BIP limit)."""
    assert bech32.decode(bech32.encode(hrp, data)) == (hrp, data)


@given(data=st.binary(min_size=1, max_size=64), flip=st.integers(min_value=0))
def test_bech32_any_single_character_change_is_detected(data: bytes, flip: int) -> None:
    """Changing one data character of an encoding never decodes to a different value."""
    text = bech32.encode("age", data)
    position = 4 + flip % (len(text) - 4)
    alphabet = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    replacement = alphabet[(alphabet.index(text[position]) + 1) % 32]
    with pytest.raises(bech32.Bech32Error):
        bech32.decode(text[:position] + replacement + text[position + 1 :])


def test_secret_key_given_as_recipient_is_refused_without_echo() -> None:
    """A secret key passed where a recipient belongs is refused and never quoted."""
    with pytest.raises(KeyFileError, match="secret key") as caught:
        agefmt.parse_recipient(SPEC_X25519_IDENTITY)
    assert SPEC_X25519_IDENTITY[15:30] not in caught.value.message


def test_recipient_given_as_identity_says_so() -> None:
    """A public key in an identity file is reported as a recipient, with the right hint."""
    with pytest.raises(KeyFileError, match="recipient \\(public key\\), not an identity"):
        agefmt.parse_identity(SPEC_X25519_RECIPIENT)
