#!/usr/bin/env python3
"""python-hl7 peer for scripts/bench-parse: parse each message of the mix and visit every
value, unescaping it, the way a typical Python integration script would. Prints
`impl=python-hl7 mb_per_s=<x> messages=<n> bytes=<b>`."""
import sys
import time

import hl7


def walk(msg, node):
    n = 0
    for item in node:
        if isinstance(item, str):
            n += len(msg.unescape(item))
        else:
            n += walk(msg, item)
    return n


def main():
    path = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    with open(path, encoding="utf-8", newline="") as f:
        mix = [m for m in f.read().split("\n\x1c\n") if m.strip()]
    parsed = []
    for m in mix:
        try:
            hl7.parse(m)
            parsed.append(m)
        except Exception:  # noqa: BLE001 - a peer's failure only leaves the message out
            pass
    total = sum(len(m.encode("utf-8")) for m in parsed)
    start = time.perf_counter()
    passes = 0
    while time.perf_counter() - start < seconds:
        for m in parsed:
            msg = hl7.parse(m)
            walk(msg, msg)
        passes += 1
    elapsed = time.perf_counter() - start
    print(f"impl=python-hl7 mb_per_s={total * passes / elapsed / 1e6:.3f} messages={len(parsed)} bytes={total} skipped={len(mix) - len(parsed)}")


if __name__ == "__main__":
    main()
