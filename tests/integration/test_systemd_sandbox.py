"""exchange runs inside the sandbox that ``systemd/exchange.service`` asks for.

PID 1 here is not systemd, so ``systemd-run -p ...`` cannot start the unit. Instead the test
builds the same restrictions from the kernel mechanisms systemd itself uses, and runs the real
``exchange`` under them against a real sshd hub:

======================================  =========================================================
unit setting                             how it is reproduced here
======================================  =========================================================
ProtectSystem=strict, ReadWritePaths     new mount namespace (``unshare -m``); every mount
                                         remounted read-only except the workspace
PrivateTmp=yes                           fresh tmpfs on /tmp and /var/tmp
ProtectHome=yes                          empty read-only tmpfs on /home, /root, /run/user (*)
PrivateDevices=yes                       tmpfs /dev with null, zero, full, random, urandom, tty
ProtectKernelTunables, ControlGroups     /sys read-only; /proc/sys hidden by ProcSubset below
ProtectProc=invisible, ProcSubset=pid    a new /proc mounted ``hidepid=invisible,subset=pid``
User=, NoNewPrivileges=yes,              ``setpriv --reuid --regid --clear-groups --no-new-privs
CapabilityBoundingSet= (empty)           --bounding-set=-all --inh-caps=-all``
UMask=0077, LimitCORE=0                  ``umask``, ``setrlimit(RLIMIT_CORE, 0)``
MemoryDenyWriteExecute=yes               ``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)``
SystemCallFilter=@system-service         a libseccomp filter (via ctypes) allowing exactly the
  ~@privileged @resources,               set ``systemd-analyze syscall-filter`` lists, EPERM
  SystemCallErrorNumber=EPERM,           otherwise, native architecture only, and ``socket()``
  SystemCallArchitectures=native,        only for AF_UNIX, AF_INET, AF_INET6
  RestrictAddressFamilies,
  RestrictNamespaces=yes                 (no unshare/setns; clone without namespace flags; clone3
                                         ENOSYS, as systemd does it)
======================================  =========================================================

(*) The interpreter of this test machine lives under /root (pyenv), so its prefix is bound
back read-only into the empty /root; a production install has it in /usr and /opt.

Not reproduced: PrivateUsers, ProtectClock, ProtectHostname, ProtectKernelModules/Logs,
RestrictRealtime, RestrictSUIDSGID, LockPersonality, RemoveIPC,
KeyringMode, DevicePolicy. Each of these only removes something further (a system call, a
device, a user mapping) that the filter above already refuses or that exchange never touches;
they are verified by ``systemd-analyze verify`` but their tolerance is not proven here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.support.sshd import Hub
from tests.support.workspace import FAST, DaemonProcess, Workspace, csv_bytes, make_workspace

pytestmark = pytest.mark.integration

NOBODY = 65534

Wrap = Callable[[Path, Sequence[str]], list[str]]

# Stage 1 runs as root inside the new mount namespace: it builds the file system view, then
# execs setpriv, which drops to the service user and execs stage 2.
_STAGE1 = r"""
import os, subprocess, sys

workspace, interpreter_prefix, uid, gid, stage2, *command = sys.argv[1:]

def mount(*args):
    subprocess.run(["mount", *args], check=True)

# PrivateTmp: move the workspace aside, put fresh tmpfs on /tmp and /var/tmp, move it back.
# The program itself (this checkout and its virtual environment) is moved back read-only
# when it lives under /tmp, as it would be installed outside /tmp in production.
mount("--bind", workspace, "/mnt")
program = [p for p in os.environ.get("SANDBOX_PROGRAM", "").split(":") if p]
program = [p for p in program if p.startswith(("/tmp/", "/var/tmp/"))]
holds = []
for index, path in enumerate(program):
    hold = f"/run/.sandbox-program-{index}"
    os.makedirs(hold, exist_ok=True)
    mount("--bind", path, hold)
    holds.append((hold, path))
for tmp in ("/tmp", "/var/tmp"):
    mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", tmp)
os.makedirs(workspace, mode=0o755, exist_ok=True)
mount("--move", "/mnt", workspace)
for hold, path in holds:
    os.makedirs(path, mode=0o755, exist_ok=True)
    mount("--move", hold, path)
    mount("-o", "remount,bind,ro", path)

# PrivateDevices: a minimal /dev.
dev = "/tmp/.sandbox-dev"
os.mkdir(dev)
mount("-t", "tmpfs", "-o", "mode=755,nosuid,noexec", "tmpfs", dev)
for name in ("null", "zero", "full", "random", "urandom", "tty"):
    open(f"{dev}/{name}", "w").close()
    mount("--bind", f"/dev/{name}", f"{dev}/{name}")
os.mkdir(f"{dev}/shm")
mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev,noexec", "tmpfs", f"{dev}/shm")
for i, name in enumerate(("stdin", "stdout", "stderr")):
    os.symlink(f"/proc/self/fd/{i}", f"{dev}/{name}")
os.symlink("/proc/self/fd", f"{dev}/fd")
mount("--move", dev, "/dev")

# ProtectHome: empty, read-only home folders (the interpreter bound back if it lives there).
for home in ("/home", "/root", "/run/user"):
    if os.path.isdir(home):
        inside = interpreter_prefix.startswith(home + "/")
        if inside:
            os.mkdir("/tmp/.sandbox-prefix")
            mount("--bind", interpreter_prefix, "/tmp/.sandbox-prefix")
        mount("-t", "tmpfs", "-o", "mode=755,nosuid,nodev,noexec", "tmpfs", home)
        if inside:
            os.makedirs(interpreter_prefix, mode=0o755)
            mount("--move", "/tmp/.sandbox-prefix", interpreter_prefix)
            mount("-o", "remount,bind,ro", interpreter_prefix)
        mount("-o", "remount,ro", home)

# ProtectSystem=strict (+ kernel tunables, control groups): everything else read-only.
keep = (workspace, "/tmp", "/var/tmp", "/dev", "/proc", "/home", "/root", "/run/user")
with open("/proc/self/mountinfo") as mountinfo:
    points = [line.split()[4].replace("\\040", " ") for line in mountinfo]
for point in sorted(set(points)):
    if any(point == k or point.startswith(k.rstrip("/") + "/") for k in keep):
        continue
    subprocess.run(["mount", "-o", "remount,bind,ro", point], check=False)

# ProtectProc=invisible, ProcSubset=pid.
mount("-t", "proc", "-o", "hidepid=invisible,subset=pid,nosuid,nodev,noexec", "proc", "/proc")

os.execvp("setpriv", [
    "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
    "--bounding-set=-all", "--inh-caps=-all", "--", sys.executable, "-c", stage2, *command,
])
"""

# Stage 2 runs as the service user with no_new_privs: resource limits, MDWE, seccomp, exec.
_STAGE2 = r"""
import ctypes, os, resource, sys

allowed, *command = sys.argv[1:]
os.umask(0o077)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")

class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

seccomp = ctypes.CDLL("libseccomp.so.2", use_errno=True)
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
seccomp.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, EPERM_ACTION, CMP_EQ = 0x7FFF0000, 0x00050000 | 1, 4
ctx = seccomp.seccomp_init(EPERM_ACTION)
for name in allowed.split(","):
    number = seccomp.seccomp_syscall_resolve_name(name.encode())
    if number < 0 or name in {"socket", "clone", "clone3", "unshare", "setns"}:
        continue
    if seccomp.seccomp_rule_add_array(ctx, ALLOW, number, 0, None) != 0:
        raise OSError(f"seccomp rule for {name}")
# RestrictNamespaces=yes, as systemd does it: no unshare/setns, clone only without namespace
# flags, clone3 (whose flags seccomp cannot see) fails with ENOSYS so libc falls back to clone.
NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
clone_nr = seccomp.seccomp_syscall_resolve_name(b"clone")
no_namespaces = ArgCmp(0, 7, NAMESPACE_FLAGS, 0)  # SCMP_CMP_MASKED_EQ
if seccomp.seccomp_rule_add_array(ctx, ALLOW, clone_nr, 1, ctypes.byref(no_namespaces)) != 0:
    raise OSError("seccomp rule for clone")
clone3_nr = seccomp.seccomp_syscall_resolve_name(b"clone3")
if seccomp.seccomp_rule_add_array(ctx, 0x00050000 | 38, clone3_nr, 0, None) != 0:
    raise OSError("seccomp rule for clone3")
socket_nr = seccomp.seccomp_syscall_resolve_name(b"socket")
for family in (1, 2, 10):  # RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
    compare = ArgCmp(0, CMP_EQ, family, 0)
    if seccomp.seccomp_rule_add_array(ctx, ALLOW, socket_nr, 1, ctypes.byref(compare)) != 0:
        raise OSError("seccomp rule for socket")
if seccomp.seccomp_load(ctx) != 0:
    raise OSError("seccomp_load")
os.execv(command[0], command)
"""

# Probes run inside the sandbox to show that it is in force (and the test not vacuous).
_PROBES = r"""
import ctypes, errno, mmap, os, socket, sys
workspace = sys.argv[1]
results = {}
def attempt(name, action):
    try:
        action()
        results[name] = "allowed"
    except OSError as error:
        results[name] = errno.errorcode.get(error.errno, str(error.errno))
attempt("write /etc", lambda: open("/etc/exchange-sandbox-probe", "w"))
attempt("write /srv", lambda: os.mkdir("/srv/exchange-sandbox-probe"))
attempt("write workspace", lambda: open(os.path.join(workspace, "probe"), "w").close())
attempt("write /tmp", lambda: open("/tmp/probe", "w").close())
attempt("list /root", lambda: os.listdir("/root") and None)
attempt("netlink socket", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close())
attempt("inet socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
attempt("mmap wx", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE
                                      | mmap.PROT_EXEC))
libc = ctypes.CDLL(None, use_errno=True)
def new_user_namespace():
    # Allowed to any user without the filter (CLONE_NEWUSER), so EPERM here is seccomp's.
    if libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
attempt("unshare", new_user_namespace)
attempt("nice 19", lambda: os.setpriority(os.PRIO_PROCESS, 0, 19))
attempt("setuid root", lambda: os.setuid(0))
attempt("read /proc/1", lambda: os.stat("/proc/1/status"))
print(repr(sorted(results.items())))
print(os.getuid(), oct(os.umask(0)), open("/proc/self/status").read().count("NoNewPrivs:\t1"))
"""


def _allowed_syscalls() -> str:
    """The system calls SystemCallFilter=@system-service ~@privileged @resources allows."""

    def expand(group: str, seen: set[str]) -> set[str]:
        result = subprocess.run(
            ["systemd-analyze", "syscall-filter", group],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        names: set[str] = set()
        for line in result.stdout.splitlines()[1:]:
            item = line.strip()
            if not item or item.startswith("#"):
                continue
            if item.startswith("@"):
                if item not in seen:
                    seen.add(item)
                    names |= expand(item, seen)
            else:
                names.add(item)
        return names

    allowed = expand("@system-service", set())
    allowed -= expand("@privileged", set()) | expand("@resources", set())
    assert {"execve", "openat", "connect", "socket"} <= allowed
    assert not {"mount", "setuid", "setrlimit", "chroot"} & allowed
    return ",".join(sorted(allowed))


@pytest.fixture(name="sandboxed", scope="module")
def fixture_sandboxed() -> Wrap:
    """Wraps a command so that it runs inside the unit's sandbox as nobody."""
    allowed = _allowed_syscalls()
    prefix = os.path.realpath(sys.base_prefix)

    def sandboxed(workspace: Path, command: Sequence[str]) -> list[str]:
        program = ":".join(
            sorted({os.path.realpath(sys.prefix), str(Path(__file__).resolve().parents[2])})
        )
        return [
            "env", f"SANDBOX_PROGRAM={program}",
            "unshare", "--mount", "--propagation", "private", "--",
            sys.executable, "-c", _STAGE1, str(workspace), prefix, str(NOBODY), str(NOBODY),
            _STAGE2, allowed, *command,
        ]  # fmt: skip

    return sandboxed


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path, hub: Hub) -> Workspace:
    """A workspace owned by the service user, with agreement 'mash' to southend-uhft."""
    ws = make_workspace(tmp_path / "ws", hub)
    ws.agreement("mash", ["southend-uhft"])
    for folder, _, files in os.walk(ws.root):
        os.chown(folder, NOBODY, NOBODY)
        for name in files:
            os.chown(os.path.join(folder, name), NOBODY, NOBODY)
    return ws


def _env(ws: Workspace, **extra: str) -> dict[str, str]:
    # What systemd gives the service: a clean environment plus the unit's Environment= lines.
    return extra | {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(ws.root),
        "USER": "nobody",
        "EXCHANGE_CONFIG": str(ws.config_dir),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _run(argv: list[str], ws: Workspace) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=_env(ws), capture_output=True, text=True, timeout=120, check=False
    )


def test_sandbox_is_in_force(ws: Workspace, sandboxed: Wrap) -> None:
    """Inside the reproduced sandbox the file system is read-only outside the workspace, homes
    are empty, netlink sockets, W+X memory, namespaces and setuid are refused, other processes
    are invisible, and the process runs as nobody with no_new_privs and umask 0077."""
    result = _run(sandboxed(ws.root, [sys.executable, "-c", _PROBES, str(ws.root)]), ws)
    assert 0 == result.returncode, result.stderr
    probes, ids = result.stdout.splitlines()
    assert {
        "inet socket": "allowed",
        "list /root": "allowed",  # empty but for the bound interpreter (module docstring)
        "mmap wx": "EACCES",
        "nice 19": "EPERM",
        "netlink socket": "EPERM",
        "read /proc/1": "ENOENT",
        "setuid root": "EPERM",
        "unshare": "EPERM",
        "write /etc": "EROFS",
        "write /srv": "EROFS",
        "write /tmp": "allowed",
        "write workspace": "allowed",
    } == dict(eval(probes))  # noqa: S307 - our own repr of string pairs
    assert f"{NOBODY} 0o77 1" == ids


def test_cli_runs_in_the_sandbox(ws: Workspace, sandboxed: Wrap) -> None:
    """`exchange --version` and `exchange config check` work under the unit's restrictions."""
    exe = [sys.executable, "-m", "exchange"]
    version = _run(sandboxed(ws.root, [*exe, "--version"]), ws)
    assert (0, "exchange") == (version.returncode, version.stdout.split()[0]), version.stderr
    check = _run(sandboxed(ws.root, [*exe, "config", "check", "--config", str(ws.config_dir)]), ws)
    assert 0 == check.returncode, check.stdout + check.stderr


def test_daemon_delivers_and_stops_cleanly_in_the_sandbox(ws: Workspace, sandboxed: Wrap) -> None:
    """`exchange run` in the sandbox takes a dropped file, delivers it over SFTP to a real hub,
    records it in the ledger, tells the notify socket READY=1, WATCHDOG=1 and STOPPING=1, and
    exits 0 on SIGTERM, with no system call refused on the way; `exchange audit sync` and
    `verify` then work there too."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"exchange-sandbox-{uuid.uuid4().hex}"
    notify.bind("\0" + name)  # abstract: reachable from inside the mount namespace
    notify.settimeout(0.1)
    log = ws.root / "daemon.log"
    exe = [sys.executable, "-m", "exchange"]
    command = [*exe, "run", "--config", str(ws.config_dir), *FAST]
    with log.open("wb") as handle:
        process = subprocess.Popen(
            sandboxed(ws.root, command),
            env=_env(ws, NOTIFY_SOCKET="@" + name, WATCHDOG_USEC="1000000"),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    daemon = DaemonProcess(process, log)
    try:
        daemon.wait_event("daemon.ready", timeout=60)
        dropped = ws.drop("mash", "referrals-june.csv", csv_bytes(4, "sandbox"))
        os.chown(dropped, NOBODY, NOBODY)
        daemon.wait_event("delivery.sent", timeout=60)
        time.sleep(1.5)  # at least one watchdog interval
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        messages = []
        while True:
            try:
                messages.append(notify.recv(4096).decode().split("\n")[0])
            except TimeoutError:
                break
        notify.close()
    for action in ("sync", "verify"):
        result = _run(
            sandboxed(ws.root, [*exe, "audit", action, "--config", str(ws.config_dir)]), ws
        )
        assert 0 == result.returncode, result.stdout + result.stderr
    assert "READY=1" == messages[0]
    assert "WATCHDOG=1" in messages
    assert "STOPPING=1" == messages[-1]
    assert 0 == code, daemon.tail()
    assert 2 == len(ws.finals("southend-uhft"))
    assert csv_bytes(4, "sandbox") == ws.decrypt(
        "southend-uhft", next(n for n in ws.finals("southend-uhft") if "manifest" not in n)
    )
    errors = [e for e in daemon.events() if e.get("level") in {"error", "critical"}]
    assert [] == errors
    assert "Operation not permitted" not in log.read_text("utf-8", errors="replace")
