"""``exchange encrypt`` and ``exchange decrypt``: age-compatible file encryption.

Rules:

1. stdin and stdout by default, like ``age``; ``-o`` writes through ``fsutil.atomic_write``,
   so a failed decryption leaves nothing under the output name.
2. Identity files are read with ``fsutil.read_private_file`` (StrictModes-style checks).
3. Errors name the input or key file they concern and keep the hint of the underlying error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from exchange import agefmt
from exchange.commands._common import add_command
from exchange.errors import (
    FormatError,
    KeyFileError,
    NotFoundError,
    PrerequisiteError,
    UsageError,
)
from exchange.fsutil import atomic_write, read_private_file


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enc = add_command(
        subparsers, "encrypt", "encrypt a file to age recipients (stock 'age -d' can decrypt it)"
    )
    enc.add_argument(
        "-r",
        "--recipient",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help="an age1… or age1pq1… public key; repeat for several recipients",
    )
    enc.add_argument(
        "-R",
        "--recipients-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a file of recipients, one per line ('#' comments)",
    )
    enc.add_argument("-a", "--armor", action="store_true", help="write PEM-armored text")
    enc.add_argument(
        "-o", "--output", type=Path, metavar="OUT", help="output file (default stdout)"
    )
    enc.add_argument("input", nargs="?", type=Path, metavar="IN", help="input file (default stdin)")
    enc.set_defaults(handler=run_encrypt)

    dec = add_command(
        subparsers, "decrypt", "decrypt an age file (binary or armored) with an identity file"
    )
    dec.add_argument(
        "-i",
        "--identity",
        action="append",
        required=True,
        type=Path,
        metavar="IDENTITY_FILE",
        help="an age-keygen identity file (mode 0600); repeat to try several",
    )
    dec.add_argument(
        "-o", "--output", type=Path, metavar="OUT", help="output file (default stdout)"
    )
    dec.add_argument("input", nargs="?", type=Path, metavar="IN", help="input file (default stdin)")
    dec.set_defaults(handler=run_decrypt)


def _recipients(args: argparse.Namespace) -> list[agefmt.Recipient]:
    recipients: list[agefmt.Recipient] = []
    for text in args.recipient:
        try:
            recipients.append(agefmt.parse_recipient(text))
        except agefmt.KeyEncodingError as error:
            raise UsageError(f"-r: {error.message}", hint=error.hint) from None
    for path in args.recipients_file:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no such recipients file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"{path}: cannot read the recipients file: {error}") from None
        recipients.extend(agefmt.parse_recipients_file(text, source=str(path)))
    if not recipients:
        raise UsageError(
            "no recipients given", hint="pass -r age1… (or -R FILE) for each recipient"
        )
    return recipients


def _identities(paths: list[Path]) -> list[agefmt.Identity]:
    identities: list[agefmt.Identity] = []
    for path in paths:
        raw = read_private_file(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyFileError(
                f"{path}: is not a text identity file",
                hint="an identity file is the output of age-keygen",
            ) from None
        identities.extend(agefmt.parse_identity_file(text, source=str(path)))
    return identities


@contextlib.contextmanager
def _input(path: Path | None) -> Iterator[tuple[BinaryIO, str]]:
    if path is None or str(path) == "-":
        yield sys.stdin.buffer, "standard input"
        return
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file", hint="check the input path") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot be read: {error.strerror}") from None
    with file:
        yield file, str(path)


@contextlib.contextmanager
def _output(path: Path | None, *, binary_to_tty: bool) -> Iterator[BinaryIO]:
    if path is None or str(path) == "-":
        if not binary_to_tty and sys.stdout.isatty():
            raise UsageError(
                "refusing to write binary ciphertext to a terminal",
                hint="use -a for armored text, or -o FILE",
            )
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        with atomic_write(path) as file:
            yield file
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(
            f"{path}: the folder does not exist", hint="create it or choose another -o"
        ) from None
    except OSError as error:
        raise PrerequisiteError(
            f"{path}: cannot write: {error.strerror}",
            hint="check free space and permissions, or choose another -o",
        ) from None


def _named(error: FormatError, name: str) -> FormatError:
    """The same error, its message prefixed with the file it concerns."""
    return type(error)(f"{name}: {error.message}", hint=error.hint)


def run_encrypt(args: argparse.Namespace) -> int:
    recipients = _recipients(args)
    with _input(args.input) as (src, _name), _output(args.output, binary_to_tty=args.armor) as dst:
        # It prints no hash, so it computes none (each SHA-256 costs CPU on every byte).
        agefmt.encrypt(
            src, dst, recipients, armor=args.armor, hash_plaintext=False, hash_ciphertext=False
        )
    return 0


def run_decrypt(args: argparse.Namespace) -> int:
    identities = _identities(args.identity)
    with _input(args.input) as (src, name):
        try:
            with _output(args.output, binary_to_tty=True) as dst:
                agefmt.decrypt(src, dst, identities, hash_plaintext=False, hash_ciphertext=False)
        except FormatError as error:
            raise _named(error, name) from None
    return 0
