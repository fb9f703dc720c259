"""What the account layout costs: raw nats-py through a service's account imports against a
user directly in the JetStream account (the single-account layout), on one server.

Alternating rounds on the same server and streams (the shipped topology, dev): publish
`jobs.ocr.requested` with `publish_async` (as svc-ingestion through its import, or as the
direct user), then consume the same messages through `ocr-worker` with `fetch(100)` + ack
(as svc-ocr under `$NATSTOPO.API`, or directly). Prints each round's rates and the
import/direct ratios with their medians; JSON last line. Ratios only: the machine is shared.

    .venv/bin/python benchmarks/account_imports.py [--messages N] [--rounds R] [--servers 2.10,2.15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import nats
from harness import ServerBinary, available_servers, running_server
from nats.js import JetStreamContext

from bus_runtime import apply_plan, load_topology, plan_changes
from bus_runtime.security import CredentialStore, connect_kwargs, read_env_file

REPO = Path(__file__).resolve().parent.parent
BODY = b"x" * 351  # the bus's envelope of the speed benchmark's payload
DIRECT = ("direct", "direct-password")


async def _publish(nc: Any, subject: str, n: int) -> float:
    js = nc.jetstream()
    started = time.perf_counter()
    futures = [await js.publish_async(subject, BODY) for _ in range(n)]
    await asyncio.gather(*futures)
    return n / (time.perf_counter() - started)


async def _consume(js: JetStreamContext, n: int) -> float:
    sub = await js.pull_subscribe_bind("ocr-worker", "TAX_AGENT_JOBS")
    started = time.perf_counter()
    got = 0
    while got < n:
        msgs = await sub.fetch(100, timeout=5)
        for m in msgs:
            await m.ack()
        got += len(msgs)
    await sub.unsubscribe()
    return n / (time.perf_counter() - started)


async def run(binary: ServerBinary, n: int, rounds: int) -> dict[str, Any]:
    topology = load_topology(REPO / "topology" / "topology.yaml", "dev")
    store = CredentialStore(Path(tempfile.mkdtemp()) / "auth")
    store.render(topology, cost=4)
    head = f'  "{topology.name}": {{\n    jetstream: enabled\n    users: [\n'
    user, password = DIRECT
    auth = store.auth_path.read_text().replace(
        head, f'{head}      {{ user: "{user}", password: "{password}" }}\n', 1
    )

    def kw(identity: str) -> dict[str, Any]:
        return connect_kwargs(identity, env={}, env_file=store.env_path(identity))

    with running_server(binary, includes={"auth.conf": auth}) as server:
        admin = await nats.connect(server.url, **kw("admin"))
        await apply_plan(admin, await plan_changes(admin, topology))
        direct = await nats.connect(server.url, user=user, password=password)
        ocr = await nats.connect(server.url, **kw("svc-ocr"))
        ingestion = await nats.connect(server.url, **kw("svc-ingestion"))
        api = read_env_file(store.env_path("svc-ocr"))["NATS_JS_API_PREFIX"]
        ratios: dict[str, list[float]] = {"publish": [], "consume": []}
        for r in range(rounds):
            order = ["direct", "import"] if r % 2 == 0 else ["import", "direct"]
            rates: dict[str, float] = {}
            for who in order:
                publisher = direct if who == "direct" else ingestion
                rates[f"publish/{who}"] = await _publish(publisher, "jobs.ocr.requested", n)
                js = direct.jetstream() if who == "direct" else ocr.jetstream(prefix=api)
                rates[f"consume/{who}"] = await _consume(js, n)
            for kind in ratios:
                ratios[kind].append(rates[f"{kind}/import"] / rates[f"{kind}/direct"])
            print(
                f"nats-server {binary.version_str} round {r + 1}: "
                + ", ".join(f"{k} {v:,.0f} msg/s" for k, v in rates.items()),
                flush=True,
            )
        for nc in (ocr, ingestion, direct, admin):
            await nc.close()
    out = {
        "server": binary.version_str,
        **{f"{k}_import_over_direct": [round(x, 3) for x in v] for k, v in ratios.items()},
        **{f"{k}_median": round(statistics.median(v), 3) for k, v in ratios.items()},
    }
    print(
        f"nats-server {binary.version_str}: import/direct medians: publish "
        f"{out['publish_median']:.2f}, consume {out['consume_median']:.2f}",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--servers", default="2.10,2.15", help="version prefixes")
    args = parser.parse_args()
    wanted = tuple(v.strip() for v in args.servers.split(","))
    binaries = [b for b in available_servers() if b.version_str.startswith(wanted)]
    if not binaries:
        sys.exit(f"no nats-server of {args.servers} installed (make setup)")
    results = [asyncio.run(run(b, args.messages, args.rounds)) for b in binaries]
    print(json.dumps({"account_imports": results}))


if __name__ == "__main__":
    main()
