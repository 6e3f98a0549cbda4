"""Encrypt and decrypt a large file with exchange.agefmt and with stock age, in the same run.

Run from the repository root:

    .venv/bin/python -m bench.crypto                 # 1 GiB, 5 rounds, updates bench/RESULTS.md
    .venv/bin/python -m bench.crypto --size-mib 64 --rounds 1 --no-results   # a quick look

Method:
- one random plaintext file and one ``age -r`` ciphertext of it in bench/out (git-ignored),
  both in the page cache; both tools decrypt that same file, and encrypt the same plaintext;
- every operation is a child process (ours: ``python -m bench.crypto.child``), timed from
  spawn to exit, so interpreter start-up counts against us as age's start-up counts against
  it; peak RSS and CPU time come from ``os.wait4`` for that child alone;
- rounds interleave ours and age (enc ours, enc age, dec ours, dec age) and ``sync`` before
  each run, so dirty-page writeback from one run does not land in the next;
- ratio = age's time / ours (above 1.0 means we are faster), from the median of the rounds;
- correctness is checked: our hashes against the plaintext, and stock ``age -d`` on our
  ciphertext;
- "ceilings": single-thread throughput of each component, to say what limits each path.
Files are deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cryptography
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN = "<!-- crypto:begin -->"
END = "<!-- crypto:end -->"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Run:
    wall: float
    cpu_user: float
    cpu_sys: float
    max_rss_mib: float
    stdout: bytes


def _sync() -> None:
    os.sync()


def run_child(argv: list[str], stats: Path) -> Run:
    """Run one program to completion; its wall time, CPU time and peak RSS alone.

    Peak RSS comes from /usr/bin/time (wait4 on its own child): a child forked straight from
    this Python process would inherit this process's high-water mark across exec.
    """
    _sync()
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(stats), *argv],
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.decode()}")
    _, user, system, max_rss_kib = stats.read_text().split()[-4:]
    return Run(wall, float(user), float(system), int(max_rss_kib) / 1024, proc.stdout)


def make_plaintext(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as file:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            digest.update(block)
            file.write(block)
            left -= len(block)
    return digest.hexdigest()


def ceilings(plain: Path, work: Path) -> dict[str, float]:
    """Single-thread MB/s of each component, on 256 MiB, and SHA-256 x2 + ChaCha on threads."""
    amount = 256 * MIB
    buf = os.urandom(MIB)
    view = memoryview(buf)
    out: dict[str, float] = {}

    def sha() -> None:
        h = hashlib.sha256()
        for _ in range(amount // MIB):
            h.update(buf)

    def chacha() -> None:
        aead = ChaCha20Poly1305(os.urandom(32))
        nonce = bytes(12)
        for _ in range(amount // MIB):
            for i in range(16):
                aead.encrypt(nonce, view[i * 65536 : (i + 1) * 65536], None)

    def read() -> None:
        left = amount
        while left > 0:
            with plain.open("rb") as file:
                while left > 0 and (data := file.read(MIB)):
                    left -= len(data)

    def write() -> None:
        target = work / "ceiling.out"
        with target.open("wb") as file:
            for _ in range(amount // MIB):
                file.write(buf)
        target.unlink()

    def threads() -> None:
        workers = [threading.Thread(target=f) for f in (sha, sha, chacha)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    for name, func in [
        ("sha256", sha),
        ("chacha20poly1305 (64 KiB chunks)", chacha),
        ("page-cache read", read),
        ("page-cache write", write),
    ]:
        _sync()
        start = time.perf_counter()
        func()
        out[name] = amount / (time.perf_counter() - start) / 1e6
    start = time.perf_counter()
    two = [threading.Thread(target=sha) for _ in range(2)]
    for w in two:
        w.start()
    for w in two:
        w.join()
    # Shows how much of the second core was free during the run (ideal: 2x sha256).
    out["sha256 on 2 threads (aggregate)"] = 2 * amount / (time.perf_counter() - start) / 1e6
    start = time.perf_counter()
    threads()
    # Throughput of the pipeline's CPU work alone: each byte is hashed twice and sealed once.
    out["2x sha256 + chacha, 3 threads (per byte of file)"] = (
        amount / (time.perf_counter() - start) / 1e6
    )
    return out


def machine() -> dict[str, str]:
    cpu = "unknown"
    with Path("/proc/cpuinfo").open() as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    age_version = subprocess.run(["age", "--version"], capture_output=True, text=True).stdout
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl (cryptography)": openssl_backend.openssl_version_text(),
        "age": age_version.strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crypto")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "crypto")
    parser.add_argument("--no-results", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    size = args.size_mib * MIB
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    plain, key = work / "plain.bin", work / "age-identity.txt"
    stock, ours_out, age_out = work / "stock.age", work / "ours.out", work / "age.out"
    stats = work / "time.txt"
    small, small_age = work / "small.bin", work / "small.age"
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    try:
        print(f"preparing {args.size_mib} MiB of random plaintext in {work}", flush=True)
        plain_sha = make_plaintext(plain, size)
        key.unlink(missing_ok=True)
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(
            ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
        ).stdout.strip()
        subprocess.run(["age", "-r", recipient, "-o", str(stock), str(plain)], check=True)
        ours = [sys.executable, "-m", "bench.crypto.child"]
        commands = {
            ("encrypt", "ours"): [*ours, "encrypt", recipient, str(plain), str(ours_out)],
            ("encrypt", "age"): ["age", "-r", recipient, "-o", str(age_out), str(plain)],
            ("decrypt", "ours"): [*ours, "decrypt", str(key), str(stock), str(ours_out)],
            ("decrypt", "age"): ["age", "-d", "-i", str(key), "-o", str(age_out), str(stock)],
        }
        runs: dict[tuple[str, str], list[Run]] = {k: [] for k in commands}
        for round_no in range(1, args.rounds + 1):
            for name, argv in commands.items():
                for leftover in (ours_out, age_out):
                    leftover.unlink(missing_ok=True)
                run = run_child(argv, stats)
                runs[name].append(run)
                print(f"round {round_no} {name[0]:8} {name[1]:4} {run.wall:6.2f} s", flush=True)
                if name == ("encrypt", "ours"):
                    check = json.loads(run.stdout)
                    assert check["plaintext_sha256"] == plain_sha
                    assert check["ciphertext_sha256"] == _sha256_file(ours_out)
                    if round_no == 1:
                        _check_stock_decrypts(key, ours_out, plain_sha)
                if name == ("decrypt", "ours"):
                    check = json.loads(run.stdout)
                    assert check["plaintext_sha256"] == plain_sha
                    assert check["ciphertext_sha256"] == _sha256_file(stock)
        print("measuring peak RSS on a file 16 times smaller", flush=True)
        small_size = max(MIB, size // 16)
        make_plaintext(small, small_size)
        subprocess.run(["age", "-r", recipient, "-o", str(small_age), str(small)], check=True)
        small_rss = {
            "encrypt": run_child(
                [*ours, "encrypt", recipient, str(small), str(ours_out)], stats
            ).max_rss_mib,
            "decrypt": run_child(
                [*ours, "decrypt", str(key), str(small_age), str(ours_out)], stats
            ).max_rss_mib,
        }
        print("measuring component ceilings", flush=True)
        limits = ceilings(plain, work)
    finally:
        for path in (plain, key, stock, ours_out, age_out, stats, small, small_age):
            path.unlink(missing_ok=True)
    load_after = os.getloadavg()
    report = render(
        size, args.rounds, runs, limits, machine(), started, load_before, load_after, small_rss
    )
    print(report)
    if not args.no_results:
        write_section(report)
        print(f"updated {RESULTS}")
    return 0


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def _check_stock_decrypts(key: Path, encrypted: Path, plain_sha: str) -> None:
    proc = subprocess.Popen(["age", "-d", "-i", str(key), str(encrypted)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    digest = hashlib.sha256()
    while block := proc.stdout.read(MIB):
        digest.update(block)
    assert proc.wait() == 0 and digest.hexdigest() == plain_sha, "stock age -d disagrees"


def render(
    size: int,
    rounds: int,
    runs: dict[tuple[str, str], list[Run]],
    limits: dict[str, float],
    host: dict[str, str],
    started: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    small_rss: dict[str, float],
) -> str:
    def mbps(seconds: float) -> float:
        return size / seconds / 1e6

    lines = [
        BEGIN,
        "## crypto: exchange.agefmt vs stock age",
        "",
        f"Command: `.venv/bin/python -m bench.crypto` (started {started}; "
        f"{size // MIB} MiB random file, {rounds} interleaved rounds, page cache warm, "
        "`sync` before each run). Each figure is one child process from spawn to exit; "
        "ours includes Python start-up and computes the plaintext and ciphertext SHA-256 "
        "in the same pass (the envelope needs both), age computes no hash.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in host.items()) + ".",
        f"Load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/"
        f"{load_after[2]:.2f} (the machine is shared; see the notes).",
        "",
        "| operation | tool | median s | best s | median MB/s | ratio age/ours (median) "
        "| ratio (best) | CPU user+sys s (median) | peak RSS MiB (max) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for op in ("encrypt", "decrypt"):
        age_runs, our_runs = runs[(op, "age")], runs[(op, "ours")]
        age_med = statistics.median(r.wall for r in age_runs)
        age_best = min(r.wall for r in age_runs)
        for tool, tool_runs in (("ours", our_runs), ("age", age_runs)):
            med = statistics.median(r.wall for r in tool_runs)
            best = min(r.wall for r in tool_runs)
            cpu = statistics.median(r.cpu_user + r.cpu_sys for r in tool_runs)
            rss = max(r.max_rss_mib for r in tool_runs)
            ratio = f"{age_med / med:.2f}" if tool == "ours" else ""
            ratio_best = f"{age_best / best:.2f}" if tool == "ours" else ""
            lines.append(
                f"| {op} | {tool} | {med:.2f} | {best:.2f} | {mbps(med):.0f} | {ratio} "
                f"| {ratio_best} | {cpu:.2f} | {rss:.1f} |"
            )
    lines += [
        "",
        "All rounds (wall seconds): "
        + "; ".join(
            f"{op} {tool}: " + ", ".join(f"{r.wall:.2f}" for r in tool_runs)
            for (op, tool), tool_runs in runs.items()
        )
        + ".",
        "",
        "Component ceilings on this machine (one thread, 256 MiB, MB/s):",
        "",
    ]
    lines += [f"- {name}: {value:.0f}" for name, value in limits.items()]
    lines += ["", *notes(size, runs, limits, small_rss), "", END]
    return "\n".join(lines)


def notes(
    size: int,
    runs: dict[tuple[str, str], list[Run]],
    limits: dict[str, float],
    small_rss: dict[str, float],
) -> list[str]:
    """What the figures say: targets, and what limits each path (derived from this run)."""
    gib = size / (1024 * MIB)

    def cpu(op: str, tool: str) -> float:
        return statistics.median(r.cpu_user + r.cpu_sys for r in runs[(op, tool)]) / gib

    def ratio(op: str) -> float:
        med = statistics.median
        return med(r.wall for r in runs[(op, "age")]) / med(r.wall for r in runs[(op, "ours")])

    peak = max(r.max_rss_mib for (_, tool), rs in runs.items() if tool == "ours" for r in rs)
    free = limits["sha256 on 2 threads (aggregate)"] / limits["sha256"]
    out = ["Findings (computed from this run):", ""]
    for op in ("encrypt", "decrypt"):
        verdict = "met" if ratio(op) >= 1.0 else "NOT met"
        out.append(
            f"- {op}: ratio {ratio(op):.2f} (target >= 1.0: {verdict}); CPU per GiB "
            f"ours {cpu(op, 'ours'):.2f} s, age {cpu(op, 'age'):.2f} s "
            f"({cpu(op, 'ours') / cpu(op, 'age'):.1f}x)."
        )
    out += [
        f"- peak RSS of ours: {peak:.1f} MiB (target < 64 MiB: "
        f"{'met' if peak < 64 else 'NOT met'}); on a file 16 times smaller it was "
        f"{small_rss['encrypt']:.1f} MiB (encrypt) and {small_rss['decrypt']:.1f} MiB "
        "(decrypt): it does not grow with the file. Memory is "
        "the interpreter (about 30 MiB with cryptography loaded) plus at most "
        "DEPTH (4) + 2 batches of 1 MiB in flight.",
        f"- second core: two SHA-256 threads together ran at {free:.2f}x one thread "
        "(2.0 = a free second core). Other engineers' test suites share this 2-CPU machine, "
        "so the wall-clock figures move by 2x from round to round; the best-of-rounds ratio "
        "is the least disturbed comparison, the median the typical one.",
        "- what limits ours: CPU. Per byte we read, SHA-256 the plaintext, ChaCha20-Poly1305 "
        "it, SHA-256 the ciphertext and write it; the two SHA-256 passes alone cost more CPU "
        "than everything age does (see the ceilings). The pipeline splits the work over two "
        "threads of about equal cost (this thread: read, hash the input side, seal or open; "
        "one worker per output: hash the output side, write), all of which release the GIL, "
        "so wall time is about CPU/2 with a free second core and about CPU without one.",
        "- what limits age: one core: Go's ChaCha20-Poly1305 plus 64 KiB read/write system "
        "calls (most of its CPU is system time); it computes no hash.",
        "- tried during development (encrypt only, 1 GiB, in-process, two sessions of "
        "2-3 interleaved runs on the same loaded machine, so indicative only): one thread "
        "per consumer (plaintext hash, ciphertext hash, writer: 4 threads in all) best "
        "1.12-1.36 s against 1.03-1.17 s for the two-thread split kept; 4 MiB batches "
        "1.16-1.56 s against 1 MiB (our guess: a 1 MiB batch stays in cache between the "
        "hash and the cipher); batches of 256-512 KiB were no better than 1 MiB.",
        "- not tried: hashing the ciphertext in the producer and the plaintext in the "
        "worker (same total), or a native helper to fuse hash and cipher in one pass.",
    ]
    return out


def write_section(section: str) -> None:
    """Replace the crypto section of RESULTS.md (between the markers), or add it."""
    if RESULTS.exists():
        text = RESULTS.read_text()
    else:
        text = (
            "# Benchmark results\n\nOne section per benchmark; each is rewritten by its script.\n"
        )
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
