"""Time `natstopo diff` of two generated topologies (1,000 streams, 10,000 topics, 2,000
consumers, four environments) that differ in 100 places, and `natstopo validate` of one.

Each figure is the wall time of the whole command in a fresh process (interpreter start,
imports, loading both files, every environment), the way CI runs it. Prints each run and,
last, one JSON line. Goals on a 2-core machine: diff under 3 s, validate under 2 s; nothing
here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from generate_topology import generate

ENVIRONMENTS = """\
  dev: {defaults: {stream: {max_age: 1d}}}
  staging: {defaults: {stream: {max_age: 3d}}}
  prod:
    defaults: {consumer: {max_ack_pending: 2000}}
    streams:
      S0: {max_bytes: 50GiB}
"""


def with_environments(text: str) -> str:
    head, _, _ = text.partition("environments:\n")
    return head + "environments:\n  local: {defaults: {stream: {max_age: 1d}}}\n" + ENVIRONMENTS


def hundred_changes(text: str, streams: int) -> str:
    """25 lowered limits, 25 raised, 25 new topics, 25 consumers with a changed max_deliver."""
    step = max(1, streams // 25)
    for i in range(0, 25 * step, step):
        text = text.replace(
            f"  S{i}:\n    subject_prefix: p{i}\n    retention: interest\n    max_bytes: 1GiB",
            f"  S{i}:\n    subject_prefix: p{i}\n    retention: interest\n    max_bytes: 512MiB",
            1,
        )
        j = i + 1
        text = text.replace(
            f"  S{j}:\n    subject_prefix: p{j}\n    retention: workqueue\n    max_bytes: 1GiB",
            f"  S{j}:\n    subject_prefix: p{j}\n    retention: workqueue\n    max_bytes: 2GiB",
            1,
        )
        text = text.replace(
            f"    topics:\n      s{i}.t0.created:",
            f"    topics:\n      s{i}.extra.created:\n        publishers: [svc-1]\n"
            f"      s{i}.t0.created:",
            1,
        )
        text = text.replace(
            f"      s{j}-c0:\n        service: svc-{(j + 1) % 50}\n",
            f"      s{j}-c0:\n        service: svc-{(j + 1) % 50}\n        max_deliver: 5\n",
            1,
        )
    return text


def wall(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, done.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--topics", type=int, default=10, help="topics per stream")
    ap.add_argument("--consumers", type=int, default=2, help="consumers per stream")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    base_text = with_environments(generate(args.streams, args.topics, args.consumers))
    head_text = hundred_changes(base_text, args.streams)
    natstopo = [sys.executable, "-m", "bus_runtime"]
    with tempfile.TemporaryDirectory() as tmp:
        base, head = Path(tmp) / "base.yaml", Path(tmp) / "head.yaml"
        base.write_text(base_text)
        head.write_text(head_text)
        out = subprocess.run(
            [*natstopo, "diff", str(base), str(head), "--format", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        summary = json.loads(out.stdout)["summary"] if out.stdout.startswith("{") else {}
        if not summary:
            print(out.stderr, file=sys.stderr)
            return 1
        print(
            f"{len(base_text.splitlines())} lines per file; {summary['changes']} changes reported "
            f"({summary['destructive']} destructive, {summary['safe']} safe, "
            f"{summary['compatible']} compatible)",
            flush=True,
        )
        diffs, validates = [], []
        for run in range(args.runs):
            seconds, code = wall([*natstopo, "diff", str(base), str(head)])
            diffs.append(seconds)
            print(f"run {run + 1}: diff {seconds:.2f} s (exit {code})", flush=True)
            seconds, code = wall([*natstopo, "validate", str(head)])
            validates.append(seconds)
            print(f"run {run + 1}: validate {seconds:.2f} s (exit {code})", flush=True)
    print(
        json.dumps(
            {
                "diff_seconds_median": round(statistics.median(diffs), 3),
                "validate_seconds_median": round(statistics.median(validates), 3),
                "changes": summary["changes"],
                "lines": len(base_text.splitlines()),
                "runs": args.runs,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
