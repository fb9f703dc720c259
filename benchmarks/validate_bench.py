"""Time load + validate of a generated topology of 1,000 streams, 10,000 topics, 2,000 consumers.

Prints each phase and, last, one JSON line. The goal on a 2-core machine is under 2 s for
the whole load + validate; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from generate_topology import generate

from bus_runtime.topology import loader as _loader
from bus_runtime.topology.schema import fast_check, strict_validator
from bus_runtime.topology.yaml_source import load_yaml


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--topics", type=int, default=10, help="topics per stream")
    ap.add_argument("--consumers", type=int, default=2, help="consumers per stream")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    text = generate(args.streams, args.topics, args.consumers)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(text)
        # The headline first, on its own: the phase runs below leave garbage behind.
        totals = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            topo, errors = _loader.check_topology(path)
            totals.append(time.perf_counter() - t0)
            if errors:
                print("\n".join(map(str, errors[:5])), file=sys.stderr)
                return 1
        yaml_t, fast_t, full_t = [], [], []
        for _ in range(args.runs):
            with _loader._gc_paused():
                t0 = time.perf_counter()
                data, _locs, _ = load_yaml(text, str(path))
                t1 = time.perf_counter()
                fast_ok = fast_check()(data)
                t2 = time.perf_counter()
                list(strict_validator().iter_errors(data))
                t3 = time.perf_counter()
            yaml_t.append(t1 - t0)
            fast_t.append(t2 - t1)
            full_t.append(t3 - t2)
            if not fast_ok:
                print("the compiled schema check refused a valid topology", file=sys.stderr)
                return 1
        assert topo is not None
        print(f"topology: {topo.summary()}, {len(text.splitlines())} lines")
        print(f"yaml compose+build:         median {statistics.median(yaml_t):.3f} s")
        print(f"schema, compiled yes/no:    median {statistics.median(fast_t):.3f} s")
        print(
            f"schema, jsonschema (ref.):  median {statistics.median(full_t):.3f} s (run only on errors)"
        )
        print(f"load + validate, in all:    median {statistics.median(totals):.3f} s (goal < 2 s)")
        print(
            json.dumps(
                {
                    "streams": len(topo.streams),
                    "topics": len(topo.topics),
                    "consumers": len(topo.consumers),
                    "load_validate_s": round(statistics.median(totals), 3),
                    "yaml_s": round(statistics.median(yaml_t), 3),
                    "schema_fast_s": round(statistics.median(fast_t), 3),
                    "schema_jsonschema_s": round(statistics.median(full_t), 3),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
