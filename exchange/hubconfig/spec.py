"""Hub values: logins, the hub spec and its layout on disk, and their validation.

Rules: pure values and checks only; no file system, no clock (``today`` is passed in).
The algorithm lists and sftp-server options here are what docs/hub.md explains.
"""

from __future__ import annotations

import base64
import enum
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from exchange.errors import ConfigError, InvariantError

#: GECOS comment that marks a Unix user as a hub login made by us.
GECOS = "exchange hub login"
SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
NOLOGIN = "/usr/sbin/nologin"
#: Protocol §11: a withdrawal takes effect 28 days after the notice.
WITHDRAWAL_NOTICE_DAYS = 28

# Algorithms: AEAD ciphers only (no CBC, no CTR+MAC fallback), no SHA-1 anywhere. Terrapin needs
# ChaCha20-Poly1305 or an EtM MAC *and* no strict kex; OpenSSH offers kex-strict-s-v00 by itself
# (Debian backported it to 9.2), and the handshake test proves it.
KEX_ALGORITHMS = (
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
)
CIPHERS = ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com")
MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com")
HOST_KEY_ALGORITHMS = ("ssh-ed25519",)
#: Key types a login may authenticate with (the shared decision is ssh-ed25519; FIDO keys too).
KEY_TYPES = ("ssh-ed25519", "sk-ssh-ed25519@openssh.com")

# Partners may not make links (TESTPLAN 49) nor change modes (root normalises them to 0640).
PARTNER_DENIED = "symlink,hardlink,setstat,fsetstat,lsetstat"
DAEMON_DENIED = "symlink,hardlink"
# 0666 & ~0027 = 0640: files a client creates without an explicit mode are group-readable.
SFTP_UMASK = "0027"

_LOGIN = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z0-9]")
_RESERVED = frozenset({"root", "daemon", "bin", "sys", "nobody", "sshd", "etc", "run", "dev"})
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class AccountKind(enum.Enum):
    PARTNER = "partner"
    DAEMON = "daemon"


@dataclass(frozen=True, slots=True)
class HubAccount:
    """One hub login. For a partner, ``folder`` is its folder under the data root."""

    login: str
    folder: str
    ssh_public_keys: tuple[str, ...]
    enabled: bool = True
    kind: AccountKind = AccountKind.PARTNER


@dataclass(frozen=True, slots=True)
class HubSpec:
    """Everything needed to render a hub. ``listen`` is only used by the standalone config."""

    root: Path
    accounts: tuple[HubAccount, ...]
    listen: tuple[str, int] = ("0.0.0.0", 22)  # noqa: S104 - a hub serves partners; tests pass 127.0.0.1
    host_key_paths: tuple[Path, ...] = ()
    max_auth_tries: int = 3
    login_grace_time: int = 30
    max_startups: str = "10:30:60"
    #: False only for TESTPLAN 49's negative control: proves the client-side link checks
    #: hold on a server that lets partners make links.
    links_denied: bool = True
    #: Logins this hub made (Unix users with our GECOS comment) that are no longer in
    #: ``accounts``: a partner removed from the registry. The drop-in denies them outright,
    #: since they no longer match its hub blocks and would get the system sshd's defaults.
    #: Filled in by ``apply_hub`` from the system's user list.
    retired: tuple[str, ...] = ()

    @property
    def daemon(self) -> HubAccount:
        daemons = [a for a in self.accounts if a.kind is AccountKind.DAEMON]
        if len(daemons) != 1:
            raise InvariantError(f"hub spec has {len(daemons)} daemon logins, expected exactly 1")
        return daemons[0]

    @property
    def partners(self) -> tuple[HubAccount, ...]:
        return tuple(a for a in self.accounts if a.kind is AccountKind.PARTNER)


@dataclass(frozen=True, slots=True)
class HubLayout:
    """Where things live under the hub root (``--root DIR``)."""

    root: Path

    @property
    def data(self) -> Path:
        """The daemon's chroot: one folder per partner."""
        return self.root / "data"

    @property
    def etc(self) -> Path:
        """Outside every chroot: config, host keys, authorized_keys."""
        return self.root / "etc"

    @property
    def authorized_keys_dir(self) -> Path:
        return self.etc / "authorized_keys"

    @property
    def sshd_config(self) -> Path:
        return self.etc / "sshd_config"

    @property
    def drop_in(self) -> Path:
        return self.etc / "sshd_config.d" / "exchange-hub.conf"

    @property
    def default_host_key(self) -> Path:
        return self.etc / "ssh_host_ed25519_key"

    def partner_dir(self, folder: str) -> Path:
        return self.data / folder


@dataclass(frozen=True, slots=True)
class DirEntry:
    path: Path
    owner: str
    group: str
    mode: int


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What :func:`apply_hub` did (for the command to print)."""

    created_users: tuple[str, ...] = ()
    host_key_paths: tuple[Path, ...] = ()
    sshd_config: Path = Path()
    drop_in: Path = Path()
    disabled: tuple[str, ...] = ()


def login_enabled(
    withdrawal_notice: date | None, today: date, access_until: date | None = None
) -> bool:
    """Whether a partner login is still enabled: until notice + 28 days (protocol §11), or
    through ``access_until`` if that is later.

    A withdrawn partner must keep complying for the data it holds, so a correction of that
    data still goes to its folder (protocol §8, §11); ops extend its access with
    ``hub_access_until`` in its partner file until it has pulled the correction.
    """
    if withdrawal_notice is None:
        return True
    if access_until is not None and today <= access_until:
        return True
    return today < withdrawal_notice + timedelta(days=WITHDRAWAL_NOTICE_DAYS)


def valid_login(name: str) -> bool:
    """True for a name that is safe as a hub login (and so in a rendered ``Match User``)."""
    return _LOGIN.fullmatch(name) is not None and name not in _RESERVED


def validate_spec(spec: HubSpec) -> None:
    """Refuse logins, folders and keys that could break or subvert the rendered files."""
    problems: list[str] = []
    seen_logins: set[str] = set()
    seen_folders: set[str] = set()
    for account in spec.accounts:
        where = f"hub login {account.login!r}"
        if not _LOGIN.fullmatch(account.login) or account.login in _RESERVED:
            problems.append(f"{where}: expected 2-32 of a-z, 0-9, '-', starting with a letter")
        if account.login in seen_logins:
            problems.append(f"{where}: duplicate login")
        seen_logins.add(account.login)
        if account.kind is AccountKind.PARTNER:
            if not _LOGIN.fullmatch(account.folder) or account.folder in _RESERVED:
                problems.append(f"{where}: folder {account.folder!r} is not a safe folder name")
            if account.folder in seen_folders:
                problems.append(f"{where}: folder {account.folder!r} is used twice")
            seen_folders.add(account.folder)
        for key in account.ssh_public_keys:
            problem = _key_problem(key)
            if problem:
                problems.append(f"{where}: ssh public key: {problem}")
    try:
        spec.daemon  # noqa: B018 - property raises when there is not exactly one daemon
    except InvariantError as error:
        problems.append(error.message)
    if problems:
        raise ConfigError(problems, hint="fix the partner registry, then run 'hub provision' again")


def _key_problem(line: str) -> str | None:
    parts = line.strip().split()
    if len(parts) < 2 or any(ord(c) < 0x20 for c in line):
        return "expected one line '<type> <base64> [comment]'"
    key_type, blob = parts[0], parts[1]
    if key_type not in KEY_TYPES:
        return f"key type {key_type!r} is not one of {', '.join(KEY_TYPES)}"
    if not _B64.fullmatch(blob):
        return "the key is not valid base64"
    raw = base64.b64decode(blob)
    # The blob starts with its own type as an SSH string; a mismatch means a pasted mix-up.
    name_len = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if raw[4 : 4 + name_len] != key_type.encode():
        return f"the key data does not hold a {key_type} key"
    return None


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[V6]:PORT`` -> (address, port)."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text)
    if not match:
        raise ValueError(f"expected ADDR:PORT, got {text!r}")
    address = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return address, port
