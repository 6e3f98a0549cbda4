"""`exchange encrypt` / `exchange decrypt` end to end: exit codes, messages, output files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exchange import agefmt
from exchange.cli import main
from exchange.errors import EXIT_CODES
from tests.unit.agefmt.test_codec import IDENTITY as TAMPER_IDENTITY
from tests.unit.agefmt.test_codec import TAMPERED

pytestmark = pytest.mark.integration

PLAINTEXT = b"case_id,agency\n1042,Essex Police\n1043,Barnardo's\n" * 3000


def run(*args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "exchange", *map(str, args)],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )


def _stderr(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode()


@pytest.fixture(name="identity_file")
def fixture_identity_file(tmp_path: Path) -> Path:
    path = tmp_path / "age-identity.txt"
    identity = agefmt.generate_x25519_identity()
    path.write_text(f"# public key: {identity.recipient().to_string()}\n{identity.to_string()}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(name="recipient")
def fixture_recipient(identity_file: Path) -> str:
    (identity,) = agefmt.parse_identity_file(identity_file.read_text())
    return identity.recipient().to_string()


@pytest.fixture(name="plain_file")
def fixture_plain_file(tmp_path: Path) -> Path:
    path = tmp_path / "referrals.csv"
    path.write_bytes(PLAINTEXT)
    return path


def test_encrypt_then_decrypt_files(
    tmp_path: Path, identity_file: Path, recipient: str, plain_file: Path
) -> None:
    """Encrypting to a file and decrypting it back gives the plaintext, exit 0, no output."""
    encrypted = tmp_path / "referrals.csv.age"
    result = run("encrypt", "-r", recipient, "-o", encrypted, plain_file)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert encrypted.read_bytes().startswith(b"age-encryption.org/v1\n")
    decrypted = tmp_path / "back.csv"
    result = run("decrypt", "-i", identity_file, "-o", decrypted, encrypted)
    assert (result.returncode, result.stderr) == (0, b"")
    assert decrypted.read_bytes() == PLAINTEXT
    assert decrypted.stat().st_mode & 0o777 == 0o600


def test_stdin_to_stdout_both_ways(identity_file: Path, recipient: str) -> None:
    """With no IN and no -o both commands are filters from stdin to stdout."""
    encrypted = run("encrypt", "-r", recipient, stdin=PLAINTEXT)
    assert encrypted.returncode == 0
    decrypted = run("decrypt", "-i", identity_file, stdin=encrypted.stdout)
    assert (decrypted.returncode, decrypted.stdout) == (0, PLAINTEXT)


def test_armor_and_recipients_file(
    tmp_path: Path, identity_file: Path, recipient: str, plain_file: Path
) -> None:
    """-a writes PEM text; -R reads recipients with comments; decrypt detects the armor."""
    other = agefmt.generate_x25519_identity().recipient().to_string()
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# Thurrock Council\n{other}\n\n{recipient}\n")
    result = run("encrypt", "-a", "-R", recipients, plain_file)
    assert result.returncode == 0
    assert result.stdout.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    back = run("decrypt", "-i", identity_file, stdin=result.stdout)
    assert (back.returncode, back.stdout) == (0, PLAINTEXT)


def test_decrypt_tampered_file_leaves_no_output(
    tmp_path: Path, identity_file: Path, recipient: str, plain_file: Path
) -> None:
    """A damaged last chunk fails with exit 5, a payload message and hint, and no -o file."""
    encrypted = tmp_path / "in.age"
    assert run("encrypt", "-r", recipient, "-o", encrypted, plain_file).returncode == 0
    data = bytearray(encrypted.read_bytes())
    data[-3] ^= 0x01
    encrypted.write_bytes(bytes(data))
    out = tmp_path / "out.csv"
    result = run("decrypt", "-i", identity_file, "-o", out, encrypted)
    assert EXIT_CODES["format"] == result.returncode
    assert f"exchange: error: {encrypted}: age payload: chunk 2 fails" in _stderr(result)
    assert "exchange: hint: the file was damaged" in _stderr(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "age-identity.txt",
        "in.age",
        "referrals.csv",
    ]


def test_decrypt_wrong_key_is_no_match(tmp_path: Path, plain_file: Path, recipient: str) -> None:
    """Decrypting with an identity the file was not encrypted to says so, exit 5."""
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(agefmt.generate_x25519_identity().to_string() + "\n")
    stranger.chmod(0o600)
    encrypted = run("encrypt", "-r", recipient, plain_file).stdout
    result = run("decrypt", "-i", stranger, "-o", tmp_path / "out", stdin=encrypted)
    assert EXIT_CODES["format"] == result.returncode
    assert "no identity matched" in _stderr(result)
    assert "exchange: hint: check that the file was encrypted to" in _stderr(result)
    assert not (tmp_path / "out").exists()


def test_decrypt_not_an_age_file(tmp_path: Path, identity_file: Path, plain_file: Path) -> None:
    """A plaintext CSV given to decrypt is a header error naming the file."""
    result = run("decrypt", "-i", identity_file, plain_file)
    assert EXIT_CODES["format"] == result.returncode
    assert f"{plain_file}: age header: the file does not start with" in _stderr(result)


def test_decrypt_refuses_open_identity_file(identity_file: Path) -> None:
    """A group-readable identity file is refused with exit 4 and a chmod 600 hint."""
    identity_file.chmod(0o640)
    result = run("decrypt", "-i", identity_file, stdin=b"")
    assert EXIT_CODES["key_file"] == result.returncode
    assert f"exchange: hint: run 'chmod 600 {identity_file}'" in _stderr(result)


def test_decrypt_refuses_symlinked_identity_file(tmp_path: Path, identity_file: Path) -> None:
    """An identity file reached through a symlink is refused with exit 4."""
    link = tmp_path / "link.txt"
    link.symlink_to(identity_file)
    result = run("decrypt", "-i", link, stdin=b"")
    assert EXIT_CODES["key_file"] == result.returncode
    assert "symbolic link" in _stderr(result)


def test_decrypt_bad_identity_line_names_file_and_line(tmp_path: Path) -> None:
    """A malformed identity is reported by file and line number, never by its content."""
    bad = tmp_path / "bad.txt"
    bad.write_text("# comment\nAGE-SECRET-KEY-1QQQQ\n")
    bad.chmod(0o600)
    result = run("decrypt", "-i", bad, stdin=b"")
    assert EXIT_CODES["key_file"] == result.returncode
    assert f"{bad}: line 2: malformed identity" in _stderr(result)
    assert "QQQQ" not in _stderr(result)


def test_encrypt_usage_errors(plain_file: Path) -> None:
    """No recipient, or a malformed one, is a usage error (exit 2) with a hint."""
    none = run("encrypt", plain_file)
    assert EXIT_CODES["usage"] == none.returncode
    assert "no recipients given" in _stderr(none)
    bad = run("encrypt", "-r", "age1notakey", plain_file)
    assert EXIT_CODES["usage"] == bad.returncode
    assert "-r: malformed recipient 'age1notakey'" in _stderr(bad)
    assert "exchange: hint:" in _stderr(bad)


def test_encrypt_refuses_mixing_post_quantum_and_classical(
    plain_file: Path, recipient: str
) -> None:
    """A hybrid and an X25519 recipient together are refused: exit 2, nothing written."""
    pq = agefmt.generate_hybrid_identity().recipient().to_string()
    result = run("encrypt", "-r", pq, "-r", recipient, plain_file)
    assert (EXIT_CODES["usage"], b"") == (result.returncode, result.stdout)
    assert "post-quantum and classical" in _stderr(result)


def test_missing_input_and_output_folder(tmp_path: Path, recipient: str, plain_file: Path) -> None:
    """A missing input file or output folder is exit 10 naming the path."""
    missing = run("encrypt", "-r", recipient, tmp_path / "absent.csv")
    assert EXIT_CODES["not_found"] == missing.returncode
    assert "absent.csv: no such file" in _stderr(missing)
    nofolder = run("encrypt", "-r", recipient, "-o", tmp_path / "no" / "x.age", plain_file)
    assert EXIT_CODES["not_found"] == nofolder.returncode


def test_hybrid_identity_round_trip(tmp_path: Path, plain_file: Path) -> None:
    """A post-quantum identity file and its age1pq1 recipient work through the CLI."""
    identity = agefmt.generate_hybrid_identity()
    key = tmp_path / "pq.txt"
    key.write_text(identity.to_string() + "\n")
    os.chmod(key, 0o600)
    encrypted = run("encrypt", "-r", identity.recipient().to_string(), plain_file)
    assert encrypted.returncode == 0
    assert b"-> mlkem768x25519 " in encrypted.stdout
    back = run("decrypt", "-i", key, stdin=encrypted.stdout)
    assert (back.returncode, back.stdout) == (0, PLAINTEXT)


def test_help_lists_both_commands() -> None:
    """The top-level help lists encrypt and decrypt."""
    result = run("--help")
    assert result.returncode == 0
    assert b"encrypt" in result.stdout and b"decrypt" in result.stdout


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_any_tampering_leaves_nothing_under_the_output_name(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Header, MAC, chunk, truncation and appended-byte damage: exit 5, no OUT, no temp."""
    data, _ = TAMPERED[case]
    key = tmp_path / "key.txt"
    key.write_text(TAMPER_IDENTITY.to_string() + "\n")
    key.chmod(0o600)
    damaged = tmp_path / "in.age"
    damaged.write_bytes(data)
    out_dir = tmp_path / "inbox"
    out_dir.mkdir()
    code = main(["decrypt", "-i", str(key), "-o", str(out_dir / "referrals.csv"), str(damaged)])
    assert code == EXIT_CODES["format"]
    assert list(out_dir.iterdir()) == []
    assert f"exchange: error: {damaged}: " in capsys.readouterr().err


def test_encrypt_refuses_binary_to_a_terminal(tmp_path: Path, recipient: str) -> None:
    """Binary ciphertext is not written to a terminal (exit 2, hint -a or -o); armor is."""
    plain_file = tmp_path / "small.txt"
    plain_file.write_bytes(b"Essex County Council")  # small: nobody reads the terminal
    controller, terminal = os.openpty()
    try:
        base = [sys.executable, "-m", "exchange", "encrypt", "-r", recipient]
        binary = subprocess.run(
            [*base, str(plain_file)], stdout=terminal, stderr=subprocess.PIPE, timeout=60
        )
        armored = subprocess.run(
            [*base, "-a", str(plain_file)], stdout=terminal, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert binary.returncode == EXIT_CODES["usage"]
    assert b"refusing to write binary ciphertext to a terminal" in binary.stderr
    assert b"hint: use -a" in binary.stderr
    assert armored.returncode == 0
