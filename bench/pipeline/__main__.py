"""End-to-end pipeline benchmarks: the real daemon, a real sshd hub, stock tools in the same run.

Run from the repository root, as root (the hub harness creates Unix users and chroots):

    .venv/bin/python -m bench.pipeline --write     # full sizes (about 6-10 minutes), updates RESULTS.md
    .venv/bin/python -m bench.pipeline --quick     # small sizes, a smoke run (about 1-2 minutes)

Measured:

- drop-to-hub latency of a small file on an immediate agreement (p50, p99), stability time
  (``--settle``) reported separately;
- end-to-end time of one dataset to 1 and to 5 partners, ours (encrypt while uploading, the
  plaintext hashed once) vs the scripted stock pipeline (``age -r`` to a temp file, then
  ``sftp put``, per partner), over several sizes for the time-vs-size plot;
- peak RSS (VmHWM) of a fresh daemon delivering one big dataset (4 GiB in a full run);
- ``exchange status`` with 100,000 deliveries in the ledger (built with the ledger API).

Rules: results go to stdout, ``bench/out/pipeline.json`` and, with ``--write``, the pipeline
section of ``bench/RESULTS.md`` (re-read just before the edit, only our markers touched) and
the two SVG plots in ``bench/pipeline/``. All data files are deleted at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench.pipeline import cases, svg, world

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "RESULTS.md"
PLOTS = ROOT / "bench" / "pipeline"
BEGIN, END = "<!-- pipeline:begin -->", "<!-- pipeline:end -->"
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Plan:
    latency_files: int
    settle: float
    sizes_mib: tuple[int, ...]  # one partner, for time vs size
    partner_counts: tuple[int, ...]  # at the biggest size, for time vs partners
    repeat: int
    rss_mib: int
    status_deliveries: int
    status_rounds: int


FULL = Plan(50, 0.5, (64, 256, 1024), (1, 2, 5), 2, 4096, 100_000, 2)
QUICK = Plan(10, 0.5, (16, 64), (1, 5), 1, 256, 10_000, 2)


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    age = subprocess.run(["age", "--version"], capture_output=True, text=True).stdout.strip()
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{int(mem) // (1 << 20)} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh": ssh,
        "age": age,
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def run(plan: Plan, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    info = machine()
    report: dict[str, Any] = {"machine": info, "plan": dataclasses.asdict(plan)}
    with world.bench_world(work) as ws:
        world.add_agreement(ws, "one", world.PARTNERS[:1])
        for count in plan.partner_counts:
            if count > 1:
                world.add_agreement(ws, f"to-{count}", world.PARTNERS[:count])
        settle = ("--settle", str(plan.settle), "--tick", "0.5")
        start = partial(ws.start, *settle)
        daemon = start()
        try:
            daemon.wait_event("daemon.ready", timeout=60)
            print(f"latency: {plan.latency_files} small files", flush=True)
            lat = cases.latency(ws, daemon, plan.settle, plan.latency_files)
            report["latency"] = dataclasses.asdict(lat) | {
                "p50": lat.percentile(0.5),
                "p99": lat.percentile(0.99),
            }
            print(f"  p50 {lat.percentile(0.5):.3f}s p99 {lat.percentile(0.99):.3f}s", flush=True)
            rows: list[cases.Throughput] = []
            biggest = plan.sizes_mib[-1]
            shapes = [(s, 1) for s in plan.sizes_mib]
            shapes += [(biggest, n) for n in plan.partner_counts if n > 1]
            for size_mib, count in shapes:
                row = cases.Throughput(size_mib * MIB, count)
                agreement = "one" if count == 1 else f"to-{count}"
                partners = world.PARTNERS[:count]
                for _ in range(plan.repeat):
                    row.ours.append(
                        cases.ours_once(ws, daemon, agreement, partners, size_mib * MIB)
                    )
                    row.stock.append(cases.stock_once(ws, work, partners, size_mib * MIB))
                print(
                    f"throughput {size_mib} MiB x {count}: ours {row.ours} stock {row.stock} "
                    f"ratio {row.ratio:.2f}",
                    flush=True,
                )
                rows.append(row)
            report["throughput"] = [dataclasses.asdict(r) | {"ratio": r.ratio} for r in rows]
            report["throughput_daemon_rss_mib"] = world.peak_rss_mib(daemon.process.pid)
        finally:
            daemon.terminate(120)
        print(f"peak RSS: {plan.rss_mib} MiB dataset", flush=True)
        rss = cases.rss_big(ws, start, plan.rss_mib * MIB)
        report["rss"] = dataclasses.asdict(rss)
        print(f"  {rss.rss_mib:.1f} MiB in {rss.seconds:.1f}s", flush=True)
    print(f"status: {plan.status_deliveries} deliveries", flush=True)
    st = cases.status_time(work, plan.status_deliveries, plan.status_rounds)
    report["status"] = dataclasses.asdict(st)
    print(f"  command {st.command} in-process {st.in_process}", flush=True)
    report["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    report["total_seconds"] = time.perf_counter() - started
    return report


def render(report: dict[str, Any], quick: bool, when: str, write: bool) -> str:
    m = report["machine"]
    lat = report["latency"]
    tp = report["throughput"]
    rss = report["rss"]
    st = report["status"]
    seconds = lat["seconds"]
    flags = [f for f, on in (("--quick", quick), ("--write", write)) if on]
    invocation = " ".join([".venv/bin/python -m bench.pipeline", *flags])
    lines = [
        "## pipeline: the daemon end to end vs the scripted stock pipeline",
        "",
        f"Measured {when} by `{invocation}` (total "
        f"{report['total_seconds']:.0f} s){' with the QUICK sizes (a smoke run)' if quick else ''}. "
        "Ours: the real `exchange run` subprocess and a real sshd hub on loopback, timed from the "
        "rename into the outbox until every partner's payload and manifest have their final "
        "names on the hub (polled every 5 ms). Stock: per partner `age -r R -o tmp file`, then "
        "`sftp -b` `put tmp` (cipher aes128-gcm@openssh.com, as ours), then `rm tmp`; it hashes "
        "and signs nothing. Best run shown, all runs in brackets.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['openssh']}, age {m['age']}; load average at start "
        f"{m['load']}, at the end {report['load_after']} (the machine is shared, so runs vary).",
        "",
        "| measure | result | target |",
        "| --- | --- | --- |",
        f"| drop-to-hub latency, small file, immediate agreement, {len(seconds)} files | "
        f"p50 {lat['p50']:.3f} s, p99 {lat['p99']:.3f} s (stability time {lat['settle']} s "
        f"included; p50 minus it {float(lat['p50']) - float(lat['settle']):.3f} s) | "
        f"p50 < 1 s + stability time |",
    ]
    for row in tp:
        ours = row["ours"]
        stock = row["stock"]
        size = int(row["size"]) // MIB
        mb_s = int(row["size"]) / min(ours) / 1e6
        lines.append(
            f"| {size} MiB to {row['partners']} partner(s), seconds | ours {min(ours):.2f} "
            f"({', '.join(f'{x:.2f}' for x in ours)}; {mb_s:.0f} MB/s of plaintext) vs stock "
            f"{min(stock):.2f} ({', '.join(f'{x:.2f}' for x in stock)}): "
            f"**{row['ratio']:.2f}x** | >= 1.5x at 1 GiB, 1 and 5 partners |"
        )
    lines += [
        f"| peak RSS, fresh daemon, one {int(rss['size']) // MIB} MiB dataset to 1 partner | "
        f"{rss['rss_mib']:.1f} MiB (delivered in {rss['seconds']:.1f} s); the daemon that "
        f"ran every case above: {report['throughput_daemon_rss_mib']:.1f} MiB, after the "
        f"latency files alone: {lat['rss_mib']:.1f} MiB | < 100 MiB at 4 GiB |",
        f"| `exchange status --json`, {st['deliveries']:,} deliveries | command (interpreter "
        f"start-up included) {min(st['command']):.2f} s ({', '.join(f'{x:.2f}' for x in st['command'])}); "
        f"the status query alone {min(st['in_process']):.2f} s; exit {st['exit_code']} | < 1 s |",
        "",
        f"The status ledger was built with the ledger API in {st['build_seconds']:.0f} s: two "
        "recipients per dataset, 99 in 100 datasets uploaded and acknowledged, the rest pending.",
        "",
        "Time vs file size (1 partner) and vs number of partners: "
        "![time vs size](pipeline/time-vs-size.svg) ![time vs partners](pipeline/time-vs-partners.svg)",
        "",
    ]
    return "\n".join(lines)


def plots(report: dict[str, Any]) -> dict[str, str]:
    tp = report["throughput"]
    one = [r for r in tp if r["partners"] == 1]
    biggest = max(int(r["size"]) for r in tp)
    at_big = [r for r in tp if r["size"] == biggest]

    def pts(rows: list[dict[str, Any]], key: str, x: str) -> list[tuple[float, float]]:
        out = []
        for r in rows:
            xv = int(r["size"]) / MIB if x == "size" else float(r["partners"])
            out.append((xv, min(r[key])))
        return out

    return {
        "time-vs-size.svg": svg.chart(
            "one dataset to one partner",
            "file size (MiB)",
            "seconds (best run)",
            [
                ("exchange run", "#1f77b4", pts(one, "ours", "size")),
                ("age + sftp", "#d62728", pts(one, "stock", "size")),
            ],
        ),
        "time-vs-partners.svg": svg.chart(
            f"one {biggest // MIB} MiB dataset",
            "partners",
            "seconds (best run)",
            [
                ("exchange run", "#1f77b4", pts(at_big, "ours", "partners")),
                ("age + sftp", "#d62728", pts(at_big, "stock", "partners")),
            ],
        ),
    }


def write_results(section: str) -> None:
    text = RESULTS.read_text("utf-8")  # re-read now: other benchmarks write their sections
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text, "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--write", action="store_true", help="update RESULTS.md and the plots")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "pipeline")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.pipeline: run as root (the hub harness needs it)", file=sys.stderr)
        return 2
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    try:
        report = run(QUICK if args.quick else FULL, args.workdir)
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = ROOT / "bench" / "out" / "pipeline.json"
    out.write_text(json.dumps(report, indent=2, default=str), "utf-8")
    section = render(report, args.quick, when, args.write)
    print(section)
    if args.write:
        write_results(section)
        for name, text in plots(report).items():
            (PLOTS / name).write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
