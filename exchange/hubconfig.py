"""Render and apply the OpenSSH hub: chroot tree, per-login authorized_keys, sshd configuration.

The hub is stock OpenSSH. This module only writes its configuration, exactly right.

Rules:

1. Rendering is pure: :func:`directory_plan`, :func:`render_authorized_keys`,
   :func:`render_sshd_config` and :func:`render_drop_in` take values and return values. Only
   :func:`apply_hub`, :func:`normalise_file_modes` and :func:`ensure_privsep_dir` touch the system.
2. It takes plain values (:class:`HubSpec`), never the configuration loader: the command passes
   them in (STYLE: adapters do not import each other).
3. Every login is a Unix user of the same name with user-private group, no home, no shell and the
   password field ``*`` (no password, not "locked", so sshd with ``UsePAM no`` accepts keys).
   An existing user that was not created by us (GECOS :data:`GECOS`) is never taken over.
4. The permission model (docs/hub.md): a partner chroot is ``root:<partner> 0750``; ``inbox/`` is
   ``<daemon>:<partner> 2750`` (the daemon writes, the partner only reads); ``outbox/`` and
   ``receipts/`` are ``<partner>:<partner> 2770`` (the partner writes; the daemon, a member of every
   partner group, lists, reads and removes). Files are normalised to 0640 by root because clients
   send their local file mode and sftp-server can only mask it (``-u``), not widen it.
5. Re-running is idempotent. A disabled (withdrawn) login keeps its folder but is left out of
   ``AllowUsers``, named in ``DenyUsers`` and gets an authorized_keys file with no keys.
"""

from __future__ import annotations

import base64
import enum
import grp
import os
import pwd
import re
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from exchange import fsutil
from exchange.errors import ConfigError, InvariantError, PrerequisiteError

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


# ---------------------------------------------------------------- pure


def login_enabled(withdrawal_notice: date | None, today: date) -> bool:
    """Whether a partner login is still enabled: until notice + 28 days (protocol §11)."""
    if withdrawal_notice is None:
        return True
    return today < withdrawal_notice + timedelta(days=WITHDRAWAL_NOTICE_DAYS)


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


def directory_plan(spec: HubSpec) -> tuple[DirEntry, ...]:
    """Every directory of the hub with its owner, group and mode, parents first."""
    layout = HubLayout(spec.root)
    daemon = spec.daemon.login
    plan = [
        DirEntry(layout.root, "root", "root", 0o755),
        DirEntry(layout.etc, "root", "root", 0o755),
        DirEntry(layout.authorized_keys_dir, "root", "root", 0o755),
        DirEntry(layout.drop_in.parent, "root", "root", 0o755),
        DirEntry(layout.data, "root", "root", 0o755),
    ]
    for partner in spec.partners:
        folder = layout.partner_dir(partner.folder)
        plan += [
            # sshd: a chroot and its parents must be root-owned and writable by root only.
            DirEntry(folder, "root", partner.login, 0o750),
            DirEntry(folder / "inbox", daemon, partner.login, 0o2750),
            DirEntry(folder / "outbox", partner.login, partner.login, 0o2770),
            DirEntry(folder / "receipts", partner.login, partner.login, 0o2770),
        ]
    return tuple(plan)


def render_authorized_keys(account: HubAccount) -> str:
    """authorized_keys for one login: each key with ``restrict``; none when disabled."""
    lines = [f"# exchange hub: {account.kind.value} login {account.login}; generated, do not edit"]
    if not account.enabled:
        lines.append("# disabled: the partner has withdrawn; its folder is kept")
        return "\n".join(lines) + "\n"
    for key in account.ssh_public_keys:
        key_type, blob = key.split()[:2]
        # Comments are dropped: they are free text from outside and have no use here.
        lines.append(f"restrict {key_type} {blob} exchange:{account.login}")
    return "\n".join(lines) + "\n"


def _common_settings(spec: HubSpec) -> list[str]:
    enabled = [a.login for a in spec.accounts if a.enabled]
    disabled = [a.login for a in spec.accounts if not a.enabled]
    lines = [
        f"AuthorizedKeysFile {HubLayout(spec.root).authorized_keys_dir}/%u",
    ]
    # An empty AllowUsers is not valid; "nobody@none" matches no hub login, so nobody gets in.
    lines.append("AllowUsers " + (" ".join(enabled) if enabled else "nobody@none.invalid"))
    if disabled:
        lines.append("DenyUsers " + " ".join(disabled))
    return lines


def _match_blocks(spec: HubSpec) -> list[str]:
    layout = HubLayout(spec.root)
    lines: list[str] = []
    for account in spec.accounts:
        if account.kind is AccountKind.DAEMON:
            chroot, denied = layout.data, DAEMON_DENIED
        else:
            chroot, denied = layout.partner_dir(account.folder), PARTNER_DENIED
        if not spec.links_denied:
            denied = denied.replace("symlink,hardlink", "").strip(",")
        deny = f" -P {denied}" if denied else ""
        lines += [
            "",
            f"Match User {account.login}",
            f"    ChrootDirectory {chroot}",
            f"    ForceCommand internal-sftp -d /{deny} -u {SFTP_UMASK} -l INFO",
            "    AuthenticationMethods publickey",
            "    PasswordAuthentication no",
            "    KbdInteractiveAuthentication no",
            "    DisableForwarding yes",
            "    PermitTTY no",
            "    PermitTunnel no",
        ]
    return lines


_HARDENING = (
    "PubkeyAuthentication yes",
    "AuthenticationMethods publickey",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "HostbasedAuthentication no",
    "PermitEmptyPasswords no",
    "PermitRootLogin no",
    "StrictModes yes",
    "DisableForwarding yes",
    "AllowTcpForwarding no",
    "AllowAgentForwarding no",
    "AllowStreamLocalForwarding no",
    "X11Forwarding no",
    "PermitTunnel no",
    "PermitTTY no",
    "PermitUserRC no",
    "PermitUserEnvironment no",
    "GatewayPorts no",
    "UseDNS no",
    "Compression no",
    "PrintMotd no",
)


def render_sshd_config(spec: HubSpec) -> str:
    """The standalone sshd_config that ``exchange hub run`` starts ``sshd -D -e -f`` with."""
    layout = HubLayout(spec.root)
    address, port = spec.listen
    host_keys = spec.host_key_paths or (layout.default_host_key,)
    lines = [
        "# exchange hub: standalone sshd configuration; generated by 'exchange hub provision'",
        f"ListenAddress {_listen(address, port)}",
        *(f"HostKey {path}" for path in host_keys),
        "PidFile none",
        "UsePAM no",
        "LogLevel VERBOSE",
        f"HostKeyAlgorithms {','.join(HOST_KEY_ALGORITHMS)}",
        f"PubkeyAcceptedAlgorithms {','.join(KEY_TYPES)}",
        f"KexAlgorithms {','.join(KEX_ALGORITHMS)}",
        f"Ciphers {','.join(CIPHERS)}",
        f"MACs {','.join(MACS)}",
        *_HARDENING,
        f"MaxAuthTries {spec.max_auth_tries}",
        f"LoginGraceTime {spec.login_grace_time}",
        f"MaxStartups {spec.max_startups}",
        "MaxSessions 4",
        "ClientAliveInterval 30",
        "ClientAliveCountMax 4",
        "AuthorizedPrincipalsFile none",
        *_common_settings(spec),
        f"Subsystem sftp internal-sftp -P {PARTNER_DENIED} -u {SFTP_UMASK} -l INFO",
        *_match_blocks(spec),
    ]
    return "\n".join(lines) + "\n"


def render_drop_in(spec: HubSpec) -> str:
    """A drop-in for the system sshd (``/etc/ssh/sshd_config.d/``): the hub logins only.

    Global options in a drop-in would change the system's own logins, so everything that
    concerns the hub sits in ``Match User`` blocks; only the algorithm lists, which sshd does
    not accept inside ``Match``, are global. sshd keeps the first value it obtains for each
    option, so the blocks of withdrawn logins come before the block shared by all logins.
    """
    logins = ",".join(a.login for a in spec.accounts)
    layout = HubLayout(spec.root)
    disabled = [a.login for a in spec.accounts if not a.enabled]
    lines = [
        "# exchange hub: drop-in for the system sshd; generated by 'exchange hub provision'",
        "# Install it in /etc/ssh/sshd_config.d/ (docs/hub.md). Debian includes drop-ins first and",
        "# sshd keeps the first value it reads, so the algorithm lines below apply system-wide:",
        "# sshd does not allow them inside Match blocks.",
        f"KexAlgorithms {','.join(KEX_ALGORITHMS)}",
        f"Ciphers {','.join(CIPHERS)}",
        f"MACs {','.join(MACS)}",
    ]
    for login in disabled:
        lines += [
            "",
            f"Match User {login}",
            "    PubkeyAuthentication no",
            "    AuthorizedKeysFile none",
        ]
    lines += [
        "",
        f"Match User {logins}",
        f"    AuthorizedKeysFile {layout.authorized_keys_dir}/%u",
        "    PubkeyAuthentication yes",
        f"    PubkeyAcceptedAlgorithms {','.join(KEY_TYPES)}",
        f"    MaxAuthTries {spec.max_auth_tries}",
        "    PermitRootLogin no",
        "    PermitEmptyPasswords no",
        "    HostbasedAuthentication no",
        "    X11Forwarding no",
        "    AllowTcpForwarding no",
        "    AllowAgentForwarding no",
        "    AllowStreamLocalForwarding no",
        "    GatewayPorts no",
        "    PermitUserRC no",
        "    AuthorizedPrincipalsFile none",
    ]
    lines += _match_blocks(spec)
    lines += ["", "Match all"]
    return "\n".join(lines) + "\n"


def _listen(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


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


# ---------------------------------------------------------------- applying it


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _require(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise PrerequisiteError(
            f"{what} failed (exit {result.returncode}): {detail[-1] if detail else 'no output'}",
            hint="hub provisioning must run as root on a system with the shadow tools (useradd)",
        )


def _retrying(argv: list[str], what: str) -> None:
    # useradd/usermod exit 1 or 10 when another process holds /etc/passwd's lock; retry briefly.
    for _attempt in range(20):
        result = _run(argv)
        if result.returncode not in (1, 10) or "lock" not in result.stderr:
            _require(result, what)
            return
        time.sleep(0.1)
    _require(result, what)


def _ensure_user(login: str) -> bool:
    """Create the Unix user + group for a login if missing; return whether it was created."""
    try:
        entry = pwd.getpwnam(login)
    except KeyError:
        entry = None
    if entry is not None:
        if entry.pw_gecos != GECOS:
            raise PrerequisiteError(
                f"unix user {login!r} already exists and is not an exchange hub login",
                hint="rename the partner's hub_folder, or remove the unrelated user",
            )
        return False
    argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/"]
    argv += ["--shell", NOLOGIN, "--comment", GECOS, login]
    result = _run(argv)
    if result.returncode == 9:
        # "already in use": made meanwhile by a concurrent run, or a group of that name
        # exists without the user, which we do not take over either.
        try:
            if pwd.getpwnam(login).pw_gecos == GECOS:
                return False
        except KeyError:
            pass
        _require(result, f"useradd {login}")
    if result.returncode in (1, 10) and "lock" in result.stderr:
        _retrying(argv, f"useradd {login}")
    else:
        _require(result, f"useradd {login}")
    return True


def _ensure_accounts(spec: HubSpec) -> list[str]:
    created = [a.login for a in spec.accounts if _ensure_user(a.login)]
    for account in spec.accounts:
        # '*' is "no password" without counting as a locked account (sshd with UsePAM no
        # refuses locked accounts even for public keys).
        if _shadow_password(account.login) != "*":
            _retrying(["usermod", "--password", "*", account.login], f"usermod {account.login}")
    daemon = spec.daemon.login
    member_of = set(os.getgrouplist(daemon, pwd.getpwnam(daemon).pw_gid))
    for partner in spec.partners:
        if grp.getgrnam(partner.login).gr_gid not in member_of:
            _retrying(["usermod", "--append", "--groups", partner.login, daemon], "usermod")
    return created


def _shadow_password(login: str) -> str | None:
    with Path("/etc/shadow").open(encoding="utf-8") as shadow:
        for line in shadow:
            fields = line.split(":")
            if fields[0] == login:
                return fields[1]
    return None


def _ensure_dir(entry: DirEntry) -> None:
    try:
        info = entry.path.lstat()
    except FileNotFoundError:
        entry.path.mkdir(mode=0o700)
        info = entry.path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise PrerequisiteError(
            f"{entry.path}: expected a directory, found something else (a link or a file)",
            hint="move it out of the way and run 'exchange hub provision' again",
        )
    uid, gid = pwd.getpwnam(entry.owner).pw_uid, grp.getgrnam(entry.group).gr_gid
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.chown(entry.path, uid, gid, follow_symlinks=False)
    # chmod after chown: chown may clear the set-group-ID bit.
    if stat.S_IMODE(entry.path.lstat().st_mode) != entry.mode:
        entry.path.chmod(entry.mode)


def _write_file(path: Path, text: str, mode: int) -> None:
    """Write root-owned ``text`` crash-safely, and only when it differs (idempotent re-runs)."""
    try:
        if path.read_text(encoding="utf-8") == text and stat.S_IMODE(path.stat().st_mode) == mode:
            return
    except FileNotFoundError:
        pass
    with fsutil.atomic_write(path, mode) as handle:
        handle.write(text.encode("utf-8"))


def _ensure_host_key(path: Path) -> None:
    if path.exists():
        return
    result = _run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "exchange-hub", "-f", str(path)]
    )
    _require(result, f"ssh-keygen for {path}")


def require_root() -> None:
    """The hub needs root: Unix logins, root-owned chroots, and sshd switching users."""
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "the hub must be provisioned and run as root: sshd needs root to chroot partners "
            "and switch to their logins",
            hint="run the command as root (sudo exchange hub ...)",
        )


def require_sshd() -> None:
    if not SSHD.is_file():
        raise PrerequisiteError(
            f"{SSHD} not found: the OpenSSH server is not installed",
            hint="install the openssh-server package (apt-get install openssh-server)",
        )


def _check_root_parents(root: Path) -> None:
    # sshd refuses a chroot unless every component of its path is root-owned and writable by
    # root only, and it reads authorized_keys as the login, so every component must also be
    # searchable by others. Checking here turns refused logins later into a clear error now.
    root.parent.mkdir(parents=True, exist_ok=True)
    for component in [root, *root.parents]:
        try:
            info = component.stat()
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise PrerequisiteError(
                f"{component}: sshd requires every folder above a chroot to be owned by root "
                "and not writable by group or others",
                hint="choose a --root under a root-owned folder, such as /srv/exchange-hub",
            )
        if not info.st_mode & 0o001:
            raise PrerequisiteError(
                f"{component}: hub logins cannot pass through this folder (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); sshd reads their authorized_keys as them",
                hint=f"chmod o+x {component}, or choose another --root",
            )


def ensure_privsep_dir() -> None:
    """sshd refuses to start without its privilege separation directory."""
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)


def apply_hub(spec: HubSpec) -> ApplyReport:
    """Create users, directories, host keys and config files for ``spec``. Idempotent."""
    validate_spec(spec)
    require_root()
    _check_root_parents(spec.root)
    created = _ensure_accounts(spec)
    for entry in directory_plan(spec):
        _ensure_dir(entry)
    layout = HubLayout(spec.root)
    # authorized_keys are read by sshd as the login: root-owned, world-readable, not writable.
    for account in spec.accounts:
        _write_file(
            layout.authorized_keys_dir / account.login, render_authorized_keys(account), 0o644
        )
    # A login dropped from the registry keeps its Unix user and folder, but not its keys.
    logins = {account.login for account in spec.accounts}
    for stale in layout.authorized_keys_dir.iterdir():
        if stale.name not in logins:
            stale.unlink()
    host_keys = spec.host_key_paths or (layout.default_host_key,)
    for path in host_keys:
        _ensure_host_key(path)
    _write_file(layout.sshd_config, render_sshd_config(spec), 0o644)
    _write_file(layout.drop_in, render_drop_in(spec), 0o644)
    normalise_file_modes(spec)
    return ApplyReport(
        created_users=tuple(created),
        host_key_paths=tuple(host_keys),
        sshd_config=layout.sshd_config,
        drop_in=layout.drop_in,
        disabled=tuple(a.login for a in spec.accounts if not a.enabled),
    )


def normalise_file_modes(spec: HubSpec) -> int:
    """Set every regular file in the partner folders to 0640; return how many changed.

    sftp-server creates files with the mode the client sends (a stock ``sftp put`` of a 0600
    file makes a 0600 file) and ``-u`` can only take bits away. Root widens them to 0640 so
    that the daemon (group member) can read partner uploads and partners their deliveries.
    Links and other non-regular entries are never followed or changed.
    """
    changed = 0
    layout = HubLayout(spec.root)
    for partner in spec.partners:
        for sub in ("inbox", "outbox", "receipts"):
            changed += _normalise_dir(layout.partner_dir(partner.folder) / sub)
    return changed


def _normalise_dir(directory: Path) -> int:
    changed = 0
    try:
        entries: Iterable[os.DirEntry[str]] = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # removed or replaced meanwhile; the next pass sees it
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != 0o640:
                os.fchmod(fd, 0o640)
                changed += 1
        finally:
            os.close(fd)
    return changed


# ---------------------------------------------------------------- hub run


def check_sshd_config(spec: HubSpec) -> None:
    """``sshd -t``: refuse to start with a config sshd itself rejects."""
    config = HubLayout(spec.root).sshd_config
    result = _run([str(SSHD), "-t", "-f", str(config)])
    if result.returncode != 0:
        raise PrerequisiteError(
            f"{config}: sshd rejects the generated configuration: {result.stderr.strip()}",
            hint="this is likely a bug or an unsupported OpenSSH version; report it",
        )


def host_key_fingerprints(spec: HubSpec) -> list[tuple[str, str]]:
    """(``ssh-keygen -lf`` line, ``ssh-ed25519 AAAA...`` line) per host key, for pinning."""
    pairs = []
    for path in spec.host_key_paths or (HubLayout(spec.root).default_host_key,):
        public = path.with_name(path.name + ".pub")
        result = _run(["ssh-keygen", "-l", "-f", str(public)])
        _require(result, f"ssh-keygen -lf {public}")
        line = " ".join(public.read_text(encoding="utf-8").split()[:2])
        pairs.append((result.stdout.strip(), line))
    return pairs


class SftpLogRelay:
    """Receive internal-sftp's file-level log (``-l INFO``) and hand each line to ``sink``.

    internal-sftp logs through syslog *after* the chroot, so it writes to ``/dev/log`` inside
    each chroot. Used as a context manager, the relay creates ``dev/log`` (a datagram socket)
    in every chroot, and removes them again on exit. Production sites using the system sshd
    give each chroot a ``dev/log`` from rsyslog or journald instead (docs/hub.md).
    """

    def __init__(self, spec: HubSpec, sink: Callable[[str], None]) -> None:
        self._sink = sink
        layout = HubLayout(spec.root)
        self._chroots = {spec.daemon.login: layout.data}
        for partner in spec.partners:
            self._chroots[partner.login] = layout.partner_dir(partner.folder)
        self._selector = selectors.DefaultSelector()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._pump, name="sftp-log-relay", daemon=True)
        self._made: list[Path] = []

    def __enter__(self) -> SftpLogRelay:
        for login, chroot in self._chroots.items():
            dev = chroot / "dev"
            if not dev.is_dir():
                dev.mkdir(mode=0o755)
                self._made.append(dev)
            path = dev / "log"
            path.unlink(missing_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            path.chmod(0o666)  # the login (not root) must be able to send to it
            self._made.insert(0, path)
            self._selector.register(sock, selectors.EVENT_READ, login)
        self._selector.register(self._stop_r, selectors.EVENT_READ, None)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
        self._selector.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
        for path in self._made:
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)

    def _pump(self) -> None:
        while True:
            for key, _events in self._selector.select():
                if key.data is None:
                    return
                if not isinstance(key.fileobj, socket.socket):
                    continue
                datagram = key.fileobj.recv(8192)
                self._sink(f"sftp {key.data}: {_syslog_message(datagram)}")


def _syslog_message(datagram: bytes) -> str:
    # "<PRI>Mmm dd hh:mm:ss internal-sftp[pid]: text": keep the program and the text.
    text = datagram.decode("utf-8", "backslashreplace").rstrip("\n\x00")
    match = re.match(r"<\d+>(?:\w{3} [ \d]\d \d\d:\d\d:\d\d )?(.*)", text, re.DOTALL)
    text = match.group(1) if match else text
    # A file name is partner-chosen text: one log line per message, no control characters.
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def run_sshd(spec: HubSpec, *, normalise_every: float = 1.0) -> int:
    """Run ``sshd -D -e -f <config>`` in the foreground until SIGTERM/SIGINT; return 0 then.

    SIGTERM and SIGINT are forwarded to sshd as SIGTERM and waited for; SIGHUP is forwarded as
    is (sshd re-reads its config). While sshd runs, file modes are normalised every
    ``normalise_every`` seconds (see :func:`normalise_file_modes`). If sshd ends by itself,
    that is an error.
    """
    require_root()
    require_sshd()
    ensure_privsep_dir()
    config = HubLayout(spec.root).sshd_config
    with SftpLogRelay(spec, _to_stderr):
        return _supervise(spec, [str(SSHD), "-D", "-e", "-f", str(config)], normalise_every)


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _supervise(spec: HubSpec, argv: list[str], normalise_every: float) -> int:
    process = subprocess.Popen(argv)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if process.poll() is not None:
            return
        if signum == signal.SIGHUP:
            process.send_signal(signal.SIGHUP)
            return
        stopping = True
        process.send_signal(signal.SIGTERM)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {signum: signal.signal(signum, forward) for signum in handled}
    try:
        while True:
            try:
                code = process.wait(timeout=normalise_every)
                break
            except subprocess.TimeoutExpired:
                normalise_file_modes(spec)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:
            process.terminate()
            process.wait()
    if stopping:
        return 0
    raise PrerequisiteError(
        f"sshd exited by itself with status {code}",
        hint="see sshd's messages above (is the address in use, or not on this machine?)",
    )
