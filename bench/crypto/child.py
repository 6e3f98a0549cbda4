"""One timed operation with exchange.agefmt, run in a child process so its peak RSS is its own.

Usage: python -m bench.crypto.child encrypt RECIPIENT SRC DST
       python -m bench.crypto.child decrypt IDENTITY_FILE SRC DST
Prints one JSON line: the result's sizes and hashes and the in-process seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from exchange import agefmt


def main(argv: list[str]) -> int:
    mode, key, src, dst = argv
    start = time.perf_counter()
    with Path(src).open("rb") as source, Path(dst).open("wb") as sink:
        if mode == "encrypt":
            result: agefmt.EncryptResult | agefmt.DecryptResult = agefmt.encrypt(
                source, sink, [agefmt.parse_recipient(key)]
            )
        else:
            identities = agefmt.parse_identity_file(Path(key).read_text())
            result = agefmt.decrypt(source, sink, identities)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
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
