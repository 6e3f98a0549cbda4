"""Applying a hub spec to this machine: Unix logins, folders, files, host keys, file modes.

Rules:

1. Idempotent: each step compares with what is there and changes only the difference.
2. Never take over what is not ours: an existing user without our GECOS comment, a group of
   a login's name without the user, a link where a folder should be; each is an error.
3. Everything runs as root; :func:`require_root` says so clearly before anything changes.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from exchange import fsutil
from exchange.errors import PrerequisiteError
from exchange.hubconfig import spec as _spec
from exchange.hubconfig.render import (
    directory_plan,
    render_authorized_keys,
    render_drop_in,
    render_sshd_config,
)
from exchange.hubconfig.spec import (
    GECOS,
    NOLOGIN,
    PRIVSEP_DIR,
    ApplyReport,
    DirEntry,
    HubLayout,
    HubSpec,
    validate_spec,
)


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


def retired_logins(spec: HubSpec) -> tuple[str, ...]:
    """Unix users this hub's provisioning made (our GECOS comment) that ``spec`` no longer has."""
    current = {a.login for a in spec.accounts}
    return tuple(
        sorted(
            entry.pw_name
            for entry in pwd.getpwall()
            if entry.pw_gecos == GECOS
            and entry.pw_name not in current
            and _spec.valid_login(entry.pw_name)
        )
    )


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
    if not _spec.SSHD.is_file():
        raise PrerequisiteError(
            f"{_spec.SSHD} not found: the OpenSSH server is not installed",
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
    # The drop-in must also deny logins we made that the registry no longer has (review L5).
    _write_file(layout.drop_in, render_drop_in(replace(spec, retired=retired_logins(spec))), 0o644)
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
        try:
            # A cheap lstat first: the steady state (every file already 0640) opens nothing.
            if not entry.is_file(follow_symlinks=False):
                continue
            if stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode) == 0o640:
                continue
        except FileNotFoundError:
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
