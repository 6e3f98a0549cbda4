"""Test harness: a real OpenSSH sshd on 127.0.0.1, provisioned by exchange.hubconfig.

Use the fixtures in tests/conftest.py (``hub``, ``hub_module``, ``hub_factory``); this module
holds the machinery.

Rules:

1. Each hub lives in its own folder under :data:`HUB_BASE` (``/var/lib/exchange-tests``):
   sshd requires every component of a chroot path to be root-owned and not writable by
   others, which rules out ``/tmp``. The folder is removed when the hub stops.
2. Hub logins are Unix users named like the partners (``essex-cc``, ``southend-uhft``,
   ``essex-police``). They are created once and reused by every test and every hub: they hold
   no state of their own (keys, config and folders are per hub). Withdrawal is tested through
   sshd's config only, never by locking the shared Unix account.
3. sshd listens on 127.0.0.1 on a free port, logs to a file (``log_text()``) and is stopped by
   the fixture, even when the test fails.
4. Not root: the fixtures fail with the reason; they never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from exchange import hubconfig
from exchange.hubconfig import AccountKind, HubAccount, HubLayout, HubSpec

HUB_BASE = Path(os.environ.get("EXCHANGE_TEST_HUB_BASE", "/var/lib/exchange-tests"))
ORGANISATION = "essex-cc"
PARTNERS = ("southend-uhft", "essex-police")
START_TIMEOUT = 15.0


class HarnessError(RuntimeError):
    """The test hub could not be set up; the message says why."""


def require_root() -> None:
    """Fail loudly (not skip) when the hub cannot be built."""
    if os.geteuid() != 0:
        raise HarnessError(
            "the sshd test harness must run as root: it creates Unix users and root-owned "
            "chroot folders (CI runs the tests as root)"
        )
    if not hubconfig.SSHD.exists():
        raise HarnessError(f"{hubconfig.SSHD} is missing: install the openssh-server package")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def output_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines an ``sftp -b`` run printed, without the echoed ``sftp>`` command lines."""
    return [line.strip() for line in result.stdout.splitlines() if not line.startswith("sftp>")]


def make_client_key(directory: Path, login: str) -> tuple[Path, str]:
    """An ed25519 client key pair (private file mode 0600); returns (path, public line)."""
    path = directory / f"{login}_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{login}@test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    path.chmod(0o600)
    return path, path.with_suffix(".pub").read_text(encoding="utf-8").strip()


@dataclass
class Hub:
    """A running test hub. See the module docstring for the rules."""

    host: str
    port: int
    root: Path
    spec: HubSpec
    known_hosts: Path
    host_public_keys: list[str]
    keys: dict[str, tuple[Path, str]]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def layout(self) -> HubLayout:
        return HubLayout(self.root)

    @property
    def organisation(self) -> str:
        """The daemon login (our own organisation)."""
        return self.spec.daemon.login

    @property
    def config_path(self) -> Path:
        return self.layout.sshd_config

    def login(self, name: str) -> tuple[Path, str]:
        """(private key path, public key line) of a hub login."""
        return self.keys[name]

    def partner_dir(self, name: str) -> Path:
        """The real path of a partner's folder (its chroot), holding inbox/outbox/receipts."""
        return self.layout.partner_dir(name)

    def log_text(self) -> str:
        """sshd's stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def ssh_options(self, name: str, key: Path | None = None) -> list[str]:
        """Client options shared by ssh and sftp: this login's key (or ``key``), the pinned
        host key, no prompts, no config files."""
        key = key or self.keys[name][0]
        return [
            "-F",
            "/dev/null",
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
        ]

    def sftp_batch(self, name: str, commands: str) -> subprocess.CompletedProcess[str]:
        """Run stock ``sftp -b -`` as ``name`` with ``commands`` on stdin (stops at the first
        failing command unless it is prefixed with ``-``)."""
        argv = ["sftp", "-b", "-", *self.ssh_options(name), "-P", str(self.port)]
        argv.append(f"{name}@{self.host}")
        return subprocess.run(
            argv, input=commands, capture_output=True, text=True, timeout=60, check=False
        )

    def ssh(
        self, name: str, *options: str, command: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """Run stock ``ssh [options] login@host [command]`` as ``name`` (for shell, TTY and
        forwarding probes); stdin is empty."""
        argv = ["ssh", *self.ssh_options(name), "-p", str(self.port), *options]
        argv += [f"{name}@{self.host}", *command]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
        )

    def normalise(self) -> int:
        """Run the root-side file mode normaliser (what ``exchange hub run`` does every second)."""
        return hubconfig.normalise_file_modes(self.spec)

    def stop(self) -> None:
        """Stop sshd (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def build_spec(
    root: Path,
    keys: dict[str, tuple[Path, str]],
    organisation: str,
    partners: Sequence[str],
    disabled: Sequence[str] = (),
    port: int = 0,
    links_denied: bool = True,
) -> HubSpec:
    accounts = [HubAccount(organisation, "", (keys[organisation][1],), kind=AccountKind.DAEMON)]
    accounts += [
        HubAccount(name, name, (keys[name][1],), enabled=name not in disabled) for name in partners
    ]
    return HubSpec(
        root=root,
        accounts=tuple(accounts),
        listen=("127.0.0.1", port),
        links_denied=links_denied,
    )


def _appender(path: Path) -> Callable[[str], None]:
    def append(line: str) -> None:
        with path.open("a", encoding="utf-8") as log:
            log.write(line + "\n")

    return append


def _wait_for_banner(hub: Hub) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert hub.process is not None
        if hub.process.poll() is not None:
            raise HarnessError(f"sshd exited with {hub.process.returncode}:\n{hub.log_text()}")
        try:
            with socket.create_connection((hub.host, hub.port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise HarnessError(f"sshd did not accept connections in {START_TIMEOUT}s:\n{hub.log_text()}")


@contextmanager
def running_hub(
    client_dir: Path,
    *,
    organisation: str = ORGANISATION,
    partners: Sequence[str] = PARTNERS,
    disabled: Sequence[str] = (),
    sftp_log: bool = False,
    links_denied: bool = True,
) -> Iterator[Hub]:
    """Provision a hub with hubconfig, start ``sshd -D -e -f cfg`` on 127.0.0.1, stop it after.

    ``client_dir`` receives the client key pairs (one per login) and the known_hosts file.
    With ``sftp_log``, internal-sftp's file-level log (``open "/inbox/x" flags READ ...``) is
    relayed into ``log_text()`` as ``sftp <login>: ...`` lines, as ``exchange hub run`` does;
    each chroot then holds a ``dev/log`` socket, which partners see as ``/dev``.
    ``links_denied=False`` lets logins create links: only for TESTPLAN 49's negative control.
    """
    require_root()
    HUB_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    HUB_BASE.chmod(0o755)
    root = Path(tempfile.mkdtemp(prefix="hub-", dir=HUB_BASE))
    root.chmod(0o755)
    keys = {name: make_client_key(client_dir, name) for name in (organisation, *partners)}
    hubconfig.ensure_privsep_dir()
    hub: Hub | None = None
    relay: hubconfig.SftpLogRelay | None = None
    try:
        for _attempt in range(3):
            port = free_port()
            spec = build_spec(root, keys, organisation, partners, disabled, port, links_denied)
            hubconfig.apply_hub(spec)
            host_pub = hubconfig.HubLayout(root).default_host_key.with_suffix(".pub")
            host_keys = [" ".join(host_pub.read_text(encoding="utf-8").split()[:2])]
            known_hosts = client_dir / "known_hosts"
            known_hosts.write_text(
                "".join(f"[127.0.0.1]:{port} {line}\n" for line in host_keys), encoding="utf-8"
            )
            log_path = client_dir / f"sshd-{port}.log"
            hub = Hub("127.0.0.1", port, root, spec, known_hosts, host_keys, keys, log_path)
            if sftp_log:
                relay = hubconfig.SftpLogRelay(spec, _appender(log_path)).__enter__()
            with log_path.open("ab") as log:
                argv = [str(hubconfig.SSHD), "-D", "-e", "-f", str(hub.config_path)]
                hub.process = subprocess.Popen(argv, stderr=log, stdout=log)
            try:
                _wait_for_banner(hub)
                break
            except HarnessError:
                hub.stop()
                if relay is not None:
                    relay.__exit__(None, None, None)
                    relay = None
                if "Address already in use" not in hub.log_text():
                    raise
        else:
            raise HarnessError("sshd could not bind a free port in 3 attempts")
        yield hub
    finally:
        if hub is not None:
            hub.stop()
        if relay is not None:
            relay.__exit__(None, None, None)
        shutil.rmtree(root, ignore_errors=True)
