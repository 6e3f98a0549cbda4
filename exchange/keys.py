"""This organisation's key files: generate, load with OpenSSH-style strictness, show the card.

Three key pairs, one purpose each (keys/README.md explains who holds what):

- ``age-identity.txt``: the age X25519 identity partners encrypt to (stock ``age -d -i`` reads it);
- ``signing-ed25519.pem``: the Ed25519 key that signs our manifests and receipts (PKCS#8 PEM,
  so ``openssl`` can use it too);
- ``hub-ssh-ed25519`` (+ ``.pub``): the SSH key of our login on the hub.

Rules:

1. Private files are created 0600 in a 0700 folder, atomically, and never overwritten without
   ``force``; with ``force`` the old file is kept under ``retired/`` (it may still be needed to
   decrypt what is in flight), never deleted.
2. Loading refuses a private file that is a symlink, not a regular file, not ours, or readable
   or writable by group or others, the way OpenSSH's StrictModes does, with the fix in the hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from exchange import agefmt, fsutil, signing
from exchange.errors import KeyFileError

AGE_IDENTITY = "age-identity.txt"
SIGNING_KEY = "signing-ed25519.pem"
SSH_KEY = "hub-ssh-ed25519"
RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class KeyPaths:
    folder: Path

    @property
    def age_identity(self) -> Path:
        return self.folder / AGE_IDENTITY

    @property
    def signing_key(self) -> Path:
        return self.folder / SIGNING_KEY

    @property
    def ssh_key(self) -> Path:
        return self.folder / SSH_KEY

    @property
    def ssh_public_key(self) -> Path:
        return self.folder / f"{SSH_KEY}.pub"

    def private_files(self) -> tuple[Path, ...]:
        return (self.age_identity, self.signing_key, self.ssh_key)


@dataclass(frozen=True, slots=True)
class KeyCard:
    """The public half of our keys, as a partner pastes it into its partner file."""

    organisation: str
    age_recipient: str
    signing_key: str
    signing_key_fingerprint: str
    ssh_public_key: str
    ssh_fingerprint: str
    created: dict[str, str]

    def to_toml(self) -> str:
        lines = [
            f"# Key card of {self.organisation}. Paste the [keys] table into",
            f"# config/partners/{self.organisation}.toml at the partner, after confirming the",
            "# fingerprints below with us by phone or in person (keys/README.md).",
            f"#   signing key fingerprint: {self.signing_key_fingerprint}",
            f"#   hub SSH key fingerprint: {self.ssh_fingerprint}",
        ]
        lines += [f"#   {name} created {when}" for name, when in sorted(self.created.items())]
        lines += [
            "[keys]",
            f'age_recipient = "{self.age_recipient}"',
            f'signing_key = "{self.signing_key}"',
            f'signing_key_fingerprint = "{self.signing_key_fingerprint}"',
            f'ssh_public_key = "{self.ssh_public_key}"',
        ]
        return "\n".join(lines) + "\n"


def _retire(path: Path, stamp: str) -> None:
    retired = path.parent / RETIRED
    retired.mkdir(mode=0o700, exist_ok=True)
    path.replace(retired / f"{path.name}.{stamp}")


def generate(folder: Path, organisation: str, *, now: datetime, force: bool = False) -> KeyPaths:
    """Create all three key pairs in ``folder``; refuse to overwrite unless ``force``."""
    paths = KeyPaths(folder)
    existing = [
        p for p in (*paths.private_files(), paths.ssh_public_key) if p.exists() or p.is_symlink()
    ]
    if existing and not force:
        names = ", ".join(p.name for p in existing)
        raise KeyFileError(
            f"{folder}: key files already exist ({names})",
            hint="keys are never overwritten by accident; pass --force to retire them to "
            f"{folder / RETIRED} and make new ones (partners then need the new key card)",
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for path in existing:
        _retire(path, stamp)

    identity = agefmt.generate_x25519_identity()
    created = now.isoformat(timespec="seconds")
    with fsutil.atomic_write(paths.age_identity, mode=0o600) as out:
        out.write(
            (
                f"# created: {created}\n"
                f"# public key: {identity.recipient().to_string()}\n"
                f"{identity.to_string()}\n"
            ).encode("ascii")
        )
    with fsutil.atomic_write(paths.signing_key, mode=0o600) as out:
        out.write(signing.generate_signing_key().to_pem())
    private, public_line = signing.generate_ssh_keypair(f"{organisation}@exchange")
    with fsutil.atomic_write(paths.ssh_key, mode=0o600) as out:
        out.write(private)
    with fsutil.atomic_write(paths.ssh_public_key, mode=0o644) as out:
        out.write((public_line + "\n").encode("ascii"))
    return paths


def read_private(path: Path) -> bytes:
    """Read a private key file after the StrictModes checks."""
    return fsutil.read_private_file(path)


def load_identities(paths: KeyPaths) -> list[agefmt.Identity]:
    text = read_private(paths.age_identity).decode("ascii", errors="replace")
    return agefmt.parse_identity_file(text)


def load_signing_key(paths: KeyPaths) -> signing.SigningKey:
    return signing.load_signing_key_pem(read_private(paths.signing_key))


def check_ssh_key(paths: KeyPaths) -> Path:
    """The SSH private key's path, after the same checks (paramiko reads the file itself)."""
    read_private(paths.ssh_key)
    return paths.ssh_key


def _created(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="seconds")


def key_card(paths: KeyPaths, organisation: str) -> KeyCard:
    """Our public key card, computed from the private files (so it cannot drift from them)."""
    for path in (*paths.private_files(), paths.ssh_public_key):
        if not path.exists():
            raise KeyFileError(
                f"{path}: key file missing", hint="run 'exchange keys generate' first"
            )
    identities = load_identities(paths)
    if len(identities) != 1:
        raise KeyFileError(
            f"{paths.age_identity}: expected exactly one identity, found {len(identities)}",
            hint="keep one identity per file; retired ones live under keys/retired/",
        )
    public = load_signing_key(paths).public_key
    check_ssh_key(paths)
    ssh_line = paths.ssh_public_key.read_text(encoding="ascii").strip()
    return KeyCard(
        organisation=organisation,
        age_recipient=identities[0].recipient().to_string(),
        signing_key=public.text,
        signing_key_fingerprint=public.fingerprint,
        ssh_public_key=ssh_line,
        ssh_fingerprint=signing.ssh_fingerprint(ssh_line),
        created={p.name: _created(p) for p in paths.private_files()},
    )
