"""`JetStreamApi`: requests to the JetStream JSON API (`$JS.API.*`) of one connection.

The raw JSON API rather than nats-py's config dataclasses, so that every field
round-trips exactly and nothing the server does not know is ever sent. A JetStream
domain or an account's imported API prefix changes the subjects (`api_prefix`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.client import JetStreamContext

from .._errors import ReconcileError
from .violations import refused

# The JetStream API's error codes that mean "not there".
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
TEMPORARILY_UNAVAILABLE = 10008  # "JetStream system temporarily unavailable"
_ATTEMPTS = 3
NO_MESSAGE_FOUND = 10037


DEFAULT_API_PREFIX = "$JS.API"


def api_prefix(domain: str | None = None, prefix: str | None = None) -> str:
    """The JetStream API's subject prefix: `$JS.<domain>.API` for a JetStream domain (a
    leaf node's hub, say), an explicit prefix (an account that imports another's API), or
    `$JS.API`.

    Raises:
        ValueError: Both a domain and a prefix, or a name with spaces or wildcards.
    """
    if domain and prefix:
        raise ValueError("give a JetStream domain or an API prefix, not both")
    value = f"$JS.{domain}.API" if domain else (prefix or DEFAULT_API_PREFIX).rstrip(".")
    if any(c in value for c in " \t*>") or ".." in value:
        raise ValueError(f"{value!r} is not a subject prefix")
    return value


class JetStreamApi:
    """Requests to the JetStream JSON API of one connection, decoding errors once."""

    def __init__(self, nc: Client, prefix: str = DEFAULT_API_PREFIX, timeout: float = 10.0) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout = timeout

    @classmethod
    def of(cls, js_or_nc: Client | JetStreamContext | JetStreamApi) -> JetStreamApi:
        if isinstance(js_or_nc, JetStreamApi):
            return js_or_nc
        if isinstance(js_or_nc, JetStreamContext):
            return cls(js_or_nc._nc, js_or_nc._prefix)
        return cls(js_or_nc)

    @property
    def server_version(self) -> tuple[int, int, int]:
        v = self.nc.connected_server_version
        try:
            return (v.major or 0, v.minor or 0, v.patch or 0)
        except ValueError:
            return (0, 0, 0)

    async def call(
        self, subject: str, body: dict[str, Any] | None = None, *, missing: int | None = None
    ) -> dict[str, Any] | None:
        """The decoded response of `<prefix>.<subject>`; None when its err_code is `missing`.

        Raises:
            ReconcileError: The API answered an error, timed out, or JetStream is not enabled.
        """
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        full = f"{self.prefix}.{subject}"
        for attempt in range(_ATTEMPTS):
            last = attempt == _ATTEMPTS - 1
            try:
                msg = await self.nc.request(full, payload, timeout=self.timeout)
            except NoRespondersError as exc:
                if self.prefix.startswith("$JS."):
                    raise ReconcileError(
                        f"JetStream is not enabled on the server (no responder for {full})"
                    ) from exc
                raise ReconcileError(
                    f"no responder for {full}: this account's imports of {self.prefix} do not "
                    "reach JetStream (is the servers' authorization rendered from this "
                    "topology? an account added by a config reload needs a server restart)"
                ) from exc
            except TimeoutError as exc:
                why = refused(self.nc, full)
                if why is not None:  # asking again cannot help
                    raise ReconcileError(
                        f"{full}: refused by the server's permissions for this connection's "
                        "identity (plan, apply, drift and import need the admin's, `natstopo "
                        "dlq` the dlq-operator's: `natstopo auth render` writes admin.env "
                        "and dlq-operator.env)"
                    ) from why
                # A cluster electing a leader answers late; creates and updates are
                # idempotent for the same config, so asking again is safe.
                if not last:
                    await asyncio.sleep(0.25 * 2**attempt)
                    continue
                raise ReconcileError(
                    f"{full}: no answer within {self.timeout:g}s ({_ATTEMPTS} attempts)"
                ) from exc
            except NatsError as exc:
                raise ReconcileError(f"{full}: {exc}") from exc
            data: dict[str, Any] = json.loads(msg.data) if msg.data else {}
            err = data.get("error")
            if not isinstance(err, dict):
                return data
            code = err.get("err_code")
            if missing is not None and code == missing:
                return None
            if code == TEMPORARILY_UNAVAILABLE and not last:
                await asyncio.sleep(0.25 * 2**attempt)
                continue
            raise ReconcileError(
                f"{full}: {err.get('description', 'error')} (err_code {code})",
                err_code=code if isinstance(code, int) else None,
            )
        raise AssertionError("unreachable")

    async def _paged(self, subject: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        missing: list[str] = []
        offset = 0
        while True:
            data = await self.call(subject, {"offset": offset})
            assert data is not None
            page = data.get(key) or []
            items += page
            missing += data.get("missing") or []
            offset += len(page)
            if not page or offset >= int(data.get("total", 0)):
                break
        if missing:
            # A cluster may leave some assets out of a list when their leader is slow.
            if key == "streams":
                more = await asyncio.gather(*(self.stream_info(n) for n in missing))
            else:
                stream = subject.rsplit(".", 1)[-1]
                more = await asyncio.gather(*(self.consumer_info(stream, n) for n in missing))
            items += [m for m in more if m is not None]
        return items

    async def list_streams(self) -> list[dict[str, Any]]:
        """Stream infos (config and state) of every stream, all pages."""
        return await self._paged("STREAM.LIST", "streams")

    async def list_consumers(self, stream: str) -> list[dict[str, Any]]:
        """Consumer infos of every consumer of `stream`, all pages."""
        return await self._paged(f"CONSUMER.LIST.{stream}", "consumers")

    async def stream_info(self, name: str) -> dict[str, Any] | None:
        return await self.call(f"STREAM.INFO.{name}", missing=STREAM_NOT_FOUND)

    async def account_info(self) -> dict[str, Any]:
        """`$JS.API.INFO`: the account's usage and JetStream limits."""
        data = await self.call("INFO")
        assert data is not None
        return data

    async def stream_subjects(self, name: str) -> dict[str, int]:
        """Messages per subject of stream `name` (all pages); empty when it is gone."""
        counts: dict[str, int] = {}
        while True:
            body = {"subjects_filter": ">", "offset": len(counts)}
            data = await self.call(f"STREAM.INFO.{name}", body, missing=STREAM_NOT_FOUND)
            if data is None:
                return counts
            state = data.get("state") or {}
            page = state.get("subjects") or {}
            before = len(counts)
            counts.update({str(k): int(v) for k, v in page.items()})
            if len(counts) == before or len(counts) >= int(state.get("num_subjects", 0) or 0):
                return counts

    async def consumer_info(self, stream: str, name: str) -> dict[str, Any] | None:
        return await self.call(f"CONSUMER.INFO.{stream}.{name}", missing=CONSUMER_NOT_FOUND)

    async def consumers_of(
        self, streams: Iterable[str], concurrency: int = 32
    ) -> dict[str, list[dict[str, Any]]]:
        """Consumer infos of each of `streams`, at most `concurrency` streams read at once."""
        sem = asyncio.Semaphore(concurrency)

        async def one(name: str) -> tuple[str, list[dict[str, Any]]]:
            async with sem:
                return name, await self.list_consumers(name)

        return dict(await asyncio.gather(*(one(n) for n in streams)))
