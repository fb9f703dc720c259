"""Generate large, valid topology files for benchmarks and scale tests.

`python benchmarks/generate_topology.py --streams 200 --topics 2 --consumers 2 -o big.yaml`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def generate(
    streams: int, topics_per_stream: int, consumers_per_stream: int, services: int = 50
) -> str:
    """YAML text of a valid topology: every stream alternates interest/workqueue retention,
    consumers split the stream's topics between them so work-queue filters never overlap."""
    lines = [
        "version: 1",
        "name: generated",
        "defaults:",
        "  stream: {storage: file, replicas: 1, max_age: 7d, duplicate_window: 2m}",
        "  consumer: {ack_policy: explicit, ack_wait: 30s, max_deliver: 3, max_ack_pending: 1000}",
        "services:",
    ]
    lines += [f"  svc-{i}: {{description: service {i}}}" for i in range(services)]
    lines.append("streams:")
    for s in range(streams):
        retention = "workqueue" if s % 2 else "interest"
        lines += [
            f"  S{s}:",
            f"    subject_prefix: p{s}",
            f"    retention: {retention}",
            "    max_bytes: 1GiB",
            "    topics:",
        ]
        for t in range(topics_per_stream):
            lines += [
                f"      s{s}.t{t}.created:",
                f"        description: topic {t} of stream {s}",
                f"        publishers: [svc-{(s + t) % services}]",
            ]
        if consumers_per_stream:
            lines.append("    consumers:")
        for c in range(consumers_per_stream):
            mine = [
                f"s{s}.t{t}.created"
                for t in range(topics_per_stream)
                if t % consumers_per_stream == c
            ]
            lines += [
                f"      s{s}-c{c}:",
                f"        service: svc-{(s + c + 1) % services}",
                f"        topics: [{', '.join(mine)}]",
                "        backoff: [1s, 5s]",
            ]
    lines += [
        "environments:",
        "  local: {defaults: {stream: {max_age: 1d}}}",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--topics", type=int, default=10, help="topics per stream")
    ap.add_argument("--consumers", type=int, default=2, help="consumers per stream")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    args.output.write_text(generate(args.streams, args.topics, args.consumers))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
