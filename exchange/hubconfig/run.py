"""``exchange hub run``: a foreground sshd with the hub config, its log relay and supervision.

Rules:

1. sshd is started as ``/usr/sbin/sshd -D -e -f <root>/etc/sshd_config``, after ``sshd -t``.
2. SIGTERM and SIGINT are forwarded as SIGTERM and waited for, then the result is exit 0;
   SIGHUP is forwarded as is. sshd ending by itself is an error.
3. While sshd runs, file modes are normalised every second and internal-sftp's file-level
   log is relayed from a ``dev/log`` socket in each chroot; both are undone on exit.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from exchange.errors import PrerequisiteError
from exchange.hubconfig import spec as _spec
from exchange.hubconfig.spec import HubLayout, HubSpec
from exchange.hubconfig.system import (
    _require,
    _run,
    ensure_privsep_dir,
    normalise_file_modes,
    require_root,
    require_sshd,
)


def check_sshd_config(spec: HubSpec) -> None:
    """``sshd -t``: refuse to start with a config sshd itself rejects."""
    config = HubLayout(spec.root).sshd_config
    result = _run([str(_spec.SSHD), "-t", "-f", str(config)])
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
        return _supervise(spec, [str(_spec.SSHD), "-D", "-e", "-f", str(config)], normalise_every)


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
