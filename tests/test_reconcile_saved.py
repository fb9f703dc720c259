"""Saved plans, account limits and the JetStream domain, through `natstopo` against real servers.

- `natstopo plan -o plan.json` then `natstopo apply plan.json` applies exactly that plan;
  when the server changed since (an edit, a new stream, more messages that a lowered limit
  would now delete) apply refuses with exit 2 and changes nothing.
- The account's JetStream limits (`$JS.API.INFO`) are plan errors, not apply failures.
- `--js-domain` sends every request to `$JS.<domain>.API`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from harness import NatsServer, available_servers
from reconcile_helpers import SHOP, api, connect, stream_config

from bus_runtime.cli.main import main

pytestmark = pytest.mark.nats
T = TypeVar("T")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def on_server(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    async def go() -> T:
        nc = await connect(url)
        try:
            return await work(nc)
        finally:
            await nc.close()

    return asyncio.run(go())


@pytest.fixture
def shop_file(tmp_path: Path) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(SHOP)
    return path


def test_saved_plan_is_applied_exactly(
    nats_server_each: NatsServer,
    capsys: pytest.CaptureFixture[str],
    shop_file: Path,
    tmp_path: Path,
) -> None:
    url = nats_server_each.url
    saved = tmp_path / "plan.json"
    code, out, err = run(capsys, "plan", "-s", url, str(shop_file), "-o", str(saved))
    assert code == 2 and "wrote the plan to" in err
    data = json.loads(saved.read_text())
    assert data["natstopo_plan"] == 1 and len(data["changes"]) == 5
    # The topology changes after review: the saved plan still applies what was reviewed.
    shop_file.write_text(SHOP.replace("max_age: 7d", "max_age: 1d"))
    code, out, _ = run(capsys, "apply", "-s", url, str(saved))
    assert code == 0, out
    assert out.splitlines()[-1].startswith("Applied 5 change(s)")
    cfg = on_server(url, lambda nc: stream_config(nc, "ORDERS"))
    assert cfg["max_age"] == 7 * 86400 * 10**9
    # Applying it again: the server is not what the plan was made against any more.
    code, _, err = run(capsys, "apply", "-s", url, str(saved))
    assert code == 2
    assert "stream ORDERS: appeared on the server" in err and "nothing was changed" in err


def test_saved_plan_refused_after_an_out_of_band_edit(
    nats_server_each: NatsServer,
    capsys: pytest.CaptureFixture[str],
    shop_file: Path,
    tmp_path: Path,
) -> None:
    url = nats_server_each.url
    assert run(capsys, "apply", "-s", url, str(shop_file))[0] == 0
    shop_file.write_text(SHOP.replace("max_age: 7d", "max_age: 30d"))
    saved = tmp_path / "plan.json"
    assert run(capsys, "plan", "-s", url, str(shop_file), "-o", str(saved))[0] == 2

    async def edit(nc: Any) -> None:
        cfg = await stream_config(nc, "ORDERS")
        cfg["description"] = "edited by hand"
        await api(nc, "STREAM.UPDATE.ORDERS", cfg)

    on_server(url, edit)
    code, _, err = run(capsys, "apply", "-s", url, str(saved))
    assert code == 2
    assert "stream ORDERS: changed on the server" in err
    cfg = on_server(url, lambda nc: stream_config(nc, "ORDERS"))
    assert cfg["max_age"] == 7 * 86400 * 10**9  # nothing was changed


def test_saved_plan_refused_when_a_lowered_limit_would_now_delete(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str], shop_file: Path, tmp_path: Path
) -> None:
    url = nats_server.url
    shop_file.write_text(SHOP.replace("    max_age: 7d\n", "    max_age: 7d\n    max_msgs: 100\n"))
    assert run(capsys, "apply", "-s", url, str(shop_file))[0] == 0

    async def publish(nc: Any, n: int) -> None:
        for _ in range(n):
            await nc.jetstream().publish("orders.created", b"{}")

    on_server(url, lambda nc: publish(nc, 3))
    shop_file.write_text(SHOP.replace("    max_age: 7d\n", "    max_age: 7d\n    max_msgs: 5\n"))
    saved = tmp_path / "plan.json"
    code, out, _ = run(capsys, "plan", "-s", url, str(shop_file), "-o", str(saved))
    assert code == 2 and "max_msgs: 100 -> 5\n" in out  # 3 stored: nothing deleted
    on_server(url, lambda nc: publish(nc, 5))  # 8 stored now
    code, _, err = run(capsys, "apply", "-s", url, str(saved))
    assert code == 2
    assert "stream ORDERS: max_msgs is now destructive: deletes the oldest messages above 5" in err
    assert on_server(url, lambda nc: api(nc, "STREAM.INFO.ORDERS"))["state"]["messages"] == 8


def test_saved_plan_with_destructive_steps_needs_the_flag(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str], shop_file: Path, tmp_path: Path
) -> None:
    url = nats_server.url
    assert run(capsys, "apply", "-s", url, str(shop_file))[0] == 0
    shop_file.write_text(SHOP.replace("storage: file", "storage: memory"))
    saved = tmp_path / "plan.json"
    assert run(capsys, "plan", "-s", url, str(shop_file), "-o", str(saved))[0] == 2
    code, _, err = run(capsys, "apply", "-s", url, str(saved))
    assert code == 2 and "--allow-destructive" in err
    assert run(capsys, "apply", "-s", url, str(saved), "--allow-destructive")[0] == 0
    assert on_server(url, lambda nc: stream_config(nc, "ORDERS"))["storage"] == "memory"


def test_not_a_saved_plan_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"natstopo_plan": 99}))
    code, _, err = run(capsys, "apply", "-s", "nats://127.0.0.1:1", str(bad))
    assert code == 1 and err.count("\n") == 1
    assert "not a saved natstopo plan" in err


# --------------------------------------------------------------------------- limits, domain


def server_with(tmp_path: Path, conf: str) -> Iterator[NatsServer]:
    store = tmp_path / "store"
    store.mkdir()
    server = NatsServer(available_servers()[-1], "limited", store, extra_conf=conf)
    try:
        server.start()
        server.wait_jetstream()
        yield server
    finally:
        server.stop()


LIMITED = """
accounts {
  SHOP: {
    jetstream: {max_streams: 1, max_file: 32MB, max_mem: 32MB}
    users: [{user: shop, password: shop-pw}]
  }
}
"""


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[NatsServer]:
    yield from server_with(tmp_path, LIMITED)


def test_account_limits_are_plan_errors(
    limited_server: NatsServer, capsys: pytest.CaptureFixture[str], shop_file: Path
) -> None:
    url = limited_server.url.replace("nats://", "nats://shop:shop-pw@")
    code, out, _ = run(capsys, "plan", "-s", url, str(shop_file))
    assert code == 1
    assert "the account allows 1 streams; after apply it would have 2" in out
    assert "file streams would reserve 80MiB (max_bytes x replicas); the account allows" in out
    code, _, err = run(capsys, "apply", "-s", url, str(shop_file))
    assert code == 1 and "shop-pw" not in err
    names = on_server(url, lambda nc: api(nc, "STREAM.NAMES"))["streams"]
    assert not names  # nothing was created


@pytest.fixture
def domain_server(tmp_path: Path) -> Iterator[NatsServer]:
    yield from server_with(tmp_path, "jetstream { domain: hub }")


def test_js_domain_sends_to_the_domains_api(
    domain_server: NatsServer, capsys: pytest.CaptureFixture[str], shop_file: Path
) -> None:
    url = domain_server.url
    s = ["-s", url, str(shop_file)]
    assert run(capsys, "apply", *s, "--js-domain", "hub")[0] == 0
    assert run(capsys, "drift", *s, "--js-domain", "hub")[0] == 0
    code, _, err = run(capsys, "plan", *s, "--js-domain", "elsewhere")
    assert code == 1 and "$JS.elsewhere.API." in err
