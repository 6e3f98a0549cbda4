"""Upload/download 1 GiB and 1,000 x 10 KiB with exchange's client and with stock ``sftp``.

Both clients talk to the same loopback sshd (the test harness hub, provisioned by
``exchange.hubconfig``), in the same run, with the same cipher (aes128-gcm@openssh.com). Each
case runs ``--repeat`` times, interleaved, and the best run counts (the machine is shared and
noisy; the best run is the least disturbed one). Results go to stdout, ``bench/out/`` (JSON)
and, with ``--write``, the transport section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cryptography
import paramiko

from exchange.transport import SftpSettings, SftpTransport
from tests.support.sshd import Hub, running_hub

CIPHER = "aes128-gcm@openssh.com"
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- transport:begin -->", "<!-- transport:end -->"
MB = 1e6


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paramiko": paramiko.__version__,
        "cryptography": cryptography.__version__,
        "openssh": ssh,
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


class Bench:
    def __init__(self, hub: Hub, work: Path, **client: object) -> None:
        self.hub = hub
        self.work = work
        self.inbox = hub.partner_dir("southend-uhft") / "inbox"
        key, _ = hub.login("essex-cc")
        self.settings = SftpSettings(
            hub.host, hub.port, "essex-cc", key, tuple(hub.host_public_keys), **client
        )

    def client(self, **overrides: object) -> SftpTransport:
        settings = self.settings
        if overrides:
            values = {f: getattr(settings, f) for f in settings.__dataclass_fields__}
            values.update(overrides)
            settings = SftpSettings(**values)
        return SftpTransport(settings)

    def stock(self, commands: str) -> float:
        argv = ["sftp", "-b", "-", *self.hub.ssh_options("essex-cc"), "-o", f"Ciphers={CIPHER}"]
        argv += ["-P", str(self.hub.port), f"essex-cc@{self.hub.host}"]
        started = time.perf_counter()
        done = subprocess.run(argv, input=commands, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"stock sftp failed: {done.stderr[-500:]}")
        return elapsed

    def clear_inbox(self) -> None:
        for entry in os.scandir(self.inbox):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def big_file_cases(b: Bench, big: Path, repeat: int) -> dict[str, list[float]]:
    size = big.stat().st_size
    dl = b.work / "download.bin"
    runs: dict[str, list[float]] = {
        k: [] for k in ("up_ours", "up_ours_nofsync", "up_stock", "up_stock_fsync")
    }
    runs |= {"down_ours": [], "down_stock": []}
    for _ in range(repeat):
        b.clear_inbox()

        def up(fsync: bool) -> None:
            with b.client(fsync=fsync) as t, big.open("rb") as src:
                t.put_atomic(src, "southend-uhft/inbox/big.age", expected_size=size)

        runs["up_ours"].append(size / timed(lambda: up(True)) / MB)
        runs["up_ours_nofsync"].append(size / timed(lambda: up(False)) / MB)
        runs["up_stock"].append(size / b.stock(f"put {big} /southend-uhft/inbox/stock.bin\n") / MB)
        runs["up_stock_fsync"].append(
            size / b.stock(f"put -f {big} /southend-uhft/inbox/stock.bin\n") / MB
        )
        b.hub.normalise()

        def down() -> None:
            with b.client() as t, dl.open("wb") as dst:
                t.get("southend-uhft/inbox/big.age", dst, max_size=size)

        runs["down_ours"].append(size / timed(down) / MB)
        if not runs.get("verified"):
            assert sha256(dl) == sha256(big), "download differs from the source"
            runs["verified"] = [1.0]
        dl.unlink()
        runs["down_stock"].append(size / b.stock(f"get /southend-uhft/inbox/stock.bin {dl}\n") / MB)
        dl.unlink()
    runs.pop("verified", None)
    b.clear_inbox()
    return runs


def small_file_cases(b: Bench, count: int, repeat: int) -> dict[str, list[float]]:
    src_dir = b.work / "small"
    src_dir.mkdir()
    payloads = [os.urandom(10 * 1024) for _ in range(count)]
    for i, data in enumerate(payloads):
        (src_dir / f"s{i:04}.bin").write_bytes(data)
    out_dir = b.work / "small-out"
    runs: dict[str, list[float]] = {
        "up_ours": [],
        "up_ours_sequential": [],
        "up_ours_nofsync": [],
        "up_stock": [],
        "up_stock_fsync": [],
        "down_ours": [],
        "down_stock": [],
    }
    for _ in range(repeat):
        b.clear_inbox()

        def up_sequential() -> None:
            with b.client() as t:
                for i, data in enumerate(payloads):
                    t.put_atomic(io.BytesIO(data), f"southend-uhft/inbox/o{i:04}.age")

        def up(fsync: bool = True) -> None:
            with b.client(fsync=fsync) as t:
                t.put_many(
                    [(f"southend-uhft/inbox/o{i:04}.age", data) for i, data in enumerate(payloads)]
                )

        runs["up_ours_sequential"].append(count / timed(up_sequential))
        b.clear_inbox()
        runs["up_ours_nofsync"].append(count / timed(lambda: up(False)))
        b.clear_inbox()
        runs["up_ours"].append(count / timed(up))
        (b.inbox / "stock").mkdir()
        shutil.chown(b.inbox / "stock", "essex-cc")
        runs["up_stock_fsync"].append(
            count / b.stock(f"put -f {src_dir}/* /southend-uhft/inbox/stock/\n")
        )
        runs["up_stock"].append(count / b.stock(f"put {src_dir}/* /southend-uhft/inbox/stock/\n"))
        b.hub.normalise()

        def down() -> None:
            with b.client() as t:
                listing = t.list("southend-uhft/inbox")
                for entry in listing.entries:
                    with (out_dir / entry.name).open("wb") as dst:
                        t.get(f"southend-uhft/inbox/{entry.name}", dst, max_size=1 << 20)

        out_dir.mkdir()
        runs["down_ours"].append(count / timed(down))
        got = len(os.listdir(out_dir))
        assert got == count, f"downloaded {got} of {count} small files"
        shutil.rmtree(out_dir)
        out_dir.mkdir()
        runs["down_stock"].append(count / b.stock(f"get /southend-uhft/inbox/stock/* {out_dir}/\n"))
        shutil.rmtree(out_dir)
    b.clear_inbox()
    return runs


def render(
    info: dict[str, str],
    big: dict[str, list[float]],
    small: dict[str, list[float]],
    size_mib: int,
    count: int,
    elapsed: float,
) -> str:
    def best(runs: list[float]) -> float:
        return max(runs)

    def row(label: str, ours: list[float], stock: list[float], unit: str, target: str) -> str:
        ratio = best(ours) / best(stock)
        all_ours = ", ".join(f"{x:.0f}" for x in ours)
        all_stock = ", ".join(f"{x:.0f}" for x in stock)
        return (
            f"| {label} | {best(ours):.0f} {unit} ({all_ours}) | {best(stock):.0f} {unit} "
            f"({all_stock}) | {ratio:.2f}x | {target} |"
        )

    lines = [
        "## Transport (SFTP client vs stock OpenSSH sftp)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        "`.venv/bin/python -m bench.transport --write` (total "
        f"{elapsed:.0f} s). Loopback sshd from the test harness, cipher `{CIPHER}` for both, "
        f"a {size_mib} MiB file and {count} files of 10 KiB. Best run shown, all runs in "
        "brackets. Ours includes connect + auth, the temporary name, the size check and "
        "posix-rename for every file, and fsync@openssh.com unless noted; stock `sftp` does "
        "none of the last three. Why each path is limited: `bench/transport/NOTES.md`.",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}, paramiko {info['paramiko']}, cryptography "
        f"{info['cryptography']}, {info['openssh']}; load average at start {info['load']} "
        "(the machine is shared with other work, so runs vary).",
        "",
        "| case | ours | stock sftp | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        row("upload 1 file, MB/s", big["up_ours"], big["up_stock"], "MB/s", ">= 1.0x"),
        row(
            "upload 1 file, both fsync (stock `put -f`), MB/s",
            big["up_ours"],
            big["up_stock_fsync"],
            "MB/s",
            "(like for like)",
        ),
        row(
            "upload 1 file, neither fsyncs, MB/s",
            big["up_ours_nofsync"],
            big["up_stock"],
            "MB/s",
            "(like for like)",
        ),
        row("download 1 file, MB/s", big["down_ours"], big["down_stock"], "MB/s", ">= 0.5x"),
        row(
            "upload small files (`put_many`), files/s",
            small["up_ours"],
            small["up_stock"],
            "files/s",
            ">= 1.0x",
        ),
        row(
            "upload small files, both fsync (stock `put -f`), files/s",
            small["up_ours"],
            small["up_stock_fsync"],
            "files/s",
            "(like for like)",
        ),
        row(
            "upload small files, neither fsyncs, files/s",
            small["up_ours_nofsync"],
            small["up_stock"],
            "files/s",
            "(like for like)",
        ),
        row(
            "upload small files, one `put_atomic` each, files/s",
            small["up_ours_sequential"],
            small["up_stock"],
            "files/s",
            "(for comparison)",
        ),
        row(
            "download small files, one `get` each, files/s",
            small["down_ours"],
            small["down_stock"],
            "files/s",
            "(none)",
        ),
    ]
    return "\n".join(lines) + "\n"


def write_results(section: str) -> None:
    block = f"{BEGIN}\n{section}{END}\n"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of the 1 GiB cases")
    parser.add_argument("--repeat-small", type=int, default=3, help="runs of the small cases")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="exchange-bench-", dir="/tmp"))
    try:
        big = work / "big.bin"
        with big.open("wb") as handle:
            for _ in range(args.size_mib):
                handle.write(os.urandom(1 << 20))
        client_dir = work / "client"
        client_dir.mkdir()
        with running_hub(client_dir) as hub:
            bench = Bench(hub, work)
            big_runs = big_file_cases(bench, big, args.repeat)
            small_runs = small_file_cases(bench, args.files, args.repeat_small)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    section = render(info, big_runs, small_runs, args.size_mib, args.files, elapsed)
    sys.stdout.write(section)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "transport.json").write_text(
        json.dumps({"machine": info, "big": big_runs, "small": small_runs}, indent=2)
    )
    if args.write:
        write_results(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
