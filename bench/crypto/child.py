"""One timed operation with exchange.agefmt, run in a child process so its peak RSS is its own.

Usage: python -m bench.crypto.child encrypt RECIPIENT SRC DST HASHES [unsettled]
       python -m bench.crypto.child decrypt IDENTITY_FILE SRC DST HASHES [unsettled]
HASHES names the SHA-256 to compute: ``pc`` (plaintext and ciphertext), ``p``, ``c`` or
``none``. ``unsettled`` skips ``_pipeline.settle_allocator`` (to show what it saves).
Prints one JSON line: the result's sizes and hashes, the in-process seconds, and the CPU
seconds of the calling thread and of all the other (worker) threads during the operation.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from exchange import agefmt
from exchange.agefmt import _pipeline


def main(argv: list[str]) -> int:
    mode, key, src, dst, hashes, *extra = argv
    if extra == ["unsettled"]:
        _pipeline._settled = True  # the latch says "done", so the one-off block is skipped
    flags = {"hash_plaintext": "p" in hashes, "hash_ciphertext": "c" in hashes}
    start = time.perf_counter()
    cpu_start, caller_start = time.process_time(), time.thread_time()
    with Path(src).open("rb") as source, Path(dst).open("wb") as sink:
        if mode == "encrypt":
            result: (
                agefmt.EncryptResult[str | None, str | None]
                | agefmt.DecryptResult[str | None, str | None]
            ) = agefmt.encrypt(source, sink, [agefmt.parse_recipient(key)], **flags)
        else:
            identities = agefmt.parse_identity_file(Path(key).read_text())
            result = agefmt.decrypt(source, sink, identities, **flags)
    seconds = time.perf_counter() - start
    caller_cpu = time.thread_time() - caller_start
    workers_cpu = time.process_time() - cpu_start - caller_cpu
    print(
        json.dumps(
            {
                "seconds": seconds,
                "caller_cpu": caller_cpu,
                "workers_cpu": workers_cpu,
                "plaintext_size": result.plaintext_size,
                "plaintext_sha256": result.plaintext_sha256,
                "ciphertext_size": result.ciphertext_size,
                "ciphertext_sha256": result.ciphertext_sha256,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
