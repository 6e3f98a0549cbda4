"""Run every benchmark with one command: ``.venv/bin/python -m bench`` (as root).

    .venv/bin/python -m bench            # full sizes; each benchmark rewrites its RESULTS.md section
    .venv/bin/python -m bench --quick    # small sizes, nothing written: a smoke run (a few minutes)
    .venv/bin/python -m bench --only pipeline --quick

Each benchmark runs as its own child process, invoked exactly as its own docstring says, one
after the other (they would disturb each other's timings if run together); a failing one is
reported and the others still run. The exit code is the number of failures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

#: name -> (full-run arguments, quick arguments). Full runs write their RESULTS.md section.
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "crypto": ([], ["--size-mib", "64", "--rounds", "1", "--no-results"]),
    "transport": (
        ["--write"],
        ["--size-mib", "64", "--files", "100", "--repeat", "1", "--repeat-small", "1"],
    ),
    "pipeline": (["--write"], ["--quick"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes; results not written")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or list(BENCHMARKS):
        full, quick = BENCHMARKS[name]
        command = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
        print(f"== {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(command, check=False).returncode
        print(f"== bench.{name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"== failed: {', '.join(failed)}", file=sys.stderr)
    return len(failed)


if __name__ == "__main__":
    raise SystemExit(main())
