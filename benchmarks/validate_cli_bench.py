"""Time the whole `natstopo validate` command on the generated 1,000-stream file.

Each run is a fresh `python -m bus_runtime validate FILE` process (interpreter start,
imports, the YAML, both builds, the fingerprint, the 1,000 warnings written), measured
as wall time and the child's user CPU. `--against DIR` alternates the runs with another
checkout of the project (run with DIR on `PYTHONPATH`), so that both see the same
moments of a shared machine; the ratio of their medians is the figure to compare.

Python's bytecode cache is written before the runs (as `pip install` does for a
package), unless `--no-bytecode-cache`: then every run compiles the modules from their
source, as with `PYTHONDONTWRITEBYTECODE=1` and no cache on disk (about 40 ms more).

Prints each run, the medians, and last one JSON line. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from generate_topology import generate

REPO = Path(__file__).resolve().parent.parent


def run_once(tree: Path, file: Path, bytecode: bool) -> tuple[float, float]:
    """(wall seconds, the child's user CPU seconds) of one validate."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bus_runtime", "validate", str(file)],
        env=env,
        cwd=tree,
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    user = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
    if done.returncode != 0:
        sys.exit(f"validate failed in {tree}:\n{done.stderr.decode()[-2000:]}")
    return wall, user


def clear_bytecode(tree: Path) -> None:
    for cache in (tree / "bus_runtime").rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--topics", type=int, default=10, help="topics per stream")
    ap.add_argument("--consumers", type=int, default=2, help="consumers per stream")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--against", type=Path, help="another checkout, run alternately")
    ap.add_argument("--no-bytecode-cache", action="store_true")
    args = ap.parse_args()
    bytecode = not args.no_bytecode_cache
    trees = {"this": REPO}
    if args.against:
        trees["against"] = args.against.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "big.yaml"
        file.write_text(generate(args.streams, args.topics, args.consumers))
        for tree in trees.values():
            if not bytecode:
                clear_bytecode(tree)
            run_once(tree, file, bytecode)  # writes the bytecode cache (or warms the disk)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for i in range(args.runs):
            order = list(trees) if i % 2 == 0 else list(reversed(trees))
            for name in order:
                wall, user = run_once(trees[name], file, bytecode)
                runs[name].append((wall, user))
                print(f"run {i + 1} {name:8} wall {wall:.3f} s user {user:.3f} s", flush=True)
    out: dict[str, object] = {"streams": args.streams, "runs": args.runs, "bytecode": bytecode}
    for name, results in runs.items():
        wall = statistics.median(r[0] for r in results)
        user = statistics.median(r[1] for r in results)
        low = min(r[0] for r in results)
        print(f"{name:8} median wall {wall:.3f} s (min {low:.3f}), median user {user:.3f} s")
        out[name] = {
            "wall_s": round(wall, 3),
            "wall_min_s": round(low, 3),
            "user_s": round(user, 3),
        }
    if args.against:
        this, other = out["this"], out["against"]
        assert isinstance(this, dict) and isinstance(other, dict)
        ratio = this["wall_s"] / other["wall_s"]
        print(f"this/against median wall: {ratio:.3f}")
        out["wall_ratio"] = round(ratio, 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
