"""Connection options for NATS, from command-line flags or the environment, and `connect`.

One place for servers, user/password, token, credentials file, nkey seed, TLS and the
JetStream domain or API prefix, and the inbox prefix (the one the server's permissions let
this identity subscribe to), used by the reconciler's commands and by the runtime. A
failed connection is one `ConnectError` line (`cannot connect to nats://127.0.0.1:4333:
connection refused`), after trying each server a bounded number of times: a command never
hangs in a reconnect loop.

Secrets never appear in a message: `redact` masks the password or token of a URL
(`nats://alice:***@host`), `ConnectOptions.redact` every secret the options hold. A
`tls://` URL or any `--tls-*` option makes TLS required: a server that does not offer it
is refused before any credentials are sent (`new_client`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.errors import AuthorizationError, NoServersError
from nats.errors import Error as NatsError

from .._errors import ConnectError
from .api import api_prefix
from .violations import record_violation

DEFAULT_SERVER = "nats://127.0.0.1:4222"
DEFAULT_CONNECT_TIMEOUT = 5.0

# Environment variables, as the `nats` CLI and the NATS docs name them.
ENV_URL = "NATS_URL"
ENV_USER = "NATS_USER"
ENV_PASSWORD = "NATS_PASSWORD"
ENV_TOKEN = "NATS_TOKEN"
ENV_CREDS = "NATS_CREDS"
ENV_NKEY = "NATS_NKEY"
ENV_CA = "NATS_CA"
ENV_CERT = "NATS_CERT"
ENV_KEY = "NATS_KEY"
# Not a NATS CLI variable: the prefix of this identity's reply inboxes (`_INBOX.<service>`),
# written by `natstopo auth render` beside the credentials it belongs to.
ENV_INBOX_PREFIX = "NATS_INBOX_PREFIX"
ENV_JS_DOMAIN = "NATS_JS_DOMAIN"
ENV_JS_API_PREFIX = "NATS_JS_API_PREFIX"
MASK = "***"
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^@/\s]+)@", re.I)


def redact(text: str) -> str:
    """`text` with the secret of every URL's user info masked: `nats://alice:***@host`,
    `nats://***@host` (a token)."""

    def mask(m: re.Match[str]) -> str:
        user, sep, _ = m.group("userinfo").partition(":")
        return f"{m.group('scheme')}{user}:{MASK}@" if sep else f"{m.group('scheme')}{MASK}@"

    return _URL_CREDENTIALS.sub(mask, text)


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach and authenticate to NATS.

    Attributes:
        servers: Server URLs; the client picks one and fails over to the others.
        user: User name (with `password`).
        password: Password of `user`.
        token: Authentication token.
        creds: Path of a `.creds` file (JWT and nkey seed).
        nkey_seed: Path of an nkey seed file.
        tls_ca: CA certificate file to verify the server.
        tls_cert: Client certificate file (mutual TLS, with `tls_key`).
        tls_key: Client private key file.
        inbox_prefix: Prefix of reply inboxes (None: nats-py's `_INBOX`); with per-service
            permissions, the only inboxes this identity may subscribe to.
        connect_timeout: Seconds to wait for each connection attempt.
        max_reconnect_attempts: Attempts per server before giving up (first connect too).
        name: Client name shown in the server's connection list.
        js_domain: The JetStream domain to manage (`$JS.<domain>.API`), e.g. a hub seen
            from a leaf node.
        js_api_prefix: The JetStream API prefix, for an account importing another's API.
    """

    servers: tuple[str, ...] = (DEFAULT_SERVER,)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    inbox_prefix: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_reconnect_attempts: int = 2
    name: str = "natstopo"
    js_domain: str | None = None
    js_api_prefix: str | None = None

    @property
    def api_prefix(self) -> str:
        """The JetStream API subject prefix (`$JS.API` unless a domain or prefix is set)."""
        return api_prefix(self.js_domain, self.js_api_prefix)

    @property
    def tls_required(self) -> bool:
        """A `tls://` URL or any TLS option: a server without TLS is refused."""
        return bool(self.tls_ca or self.tls_cert or self.tls_key) or any(
            urlsplit(u).scheme == "tls" for u in self.servers
        )

    @property
    def shown_servers(self) -> tuple[str, ...]:
        """The server URLs with their passwords and tokens masked."""
        return tuple(redact(u) for u in self.servers)

    def redact(self, text: str) -> str:
        """`text` with every secret these options hold masked (URL user info, password,
        token)."""
        text = redact(text)
        secrets = [self.password, self.token]
        for u in self.servers:
            parts = urlsplit(u)
            secrets += [parts.password, parts.username if parts.password is None else None]
        for secret in secrets:
            if secret and len(secret) >= 3:
                text = text.replace(secret, MASK)
        return text

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ConnectOptions:
        """Options from `NATS_URL`, `NATS_USER`, ... with `overrides` (not None) winning."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "servers": split_servers(env.get(ENV_URL) or DEFAULT_SERVER),
            "user": env.get(ENV_USER) or None,
            "password": env.get(ENV_PASSWORD) or None,
            "token": env.get(ENV_TOKEN) or None,
            "creds": env.get(ENV_CREDS) or None,
            "nkey_seed": env.get(ENV_NKEY) or None,
            "tls_ca": env.get(ENV_CA) or None,
            "tls_cert": env.get(ENV_CERT) or None,
            "tls_key": env.get(ENV_KEY) or None,
            "inbox_prefix": env.get(ENV_INBOX_PREFIX) or None,
            "js_domain": env.get(ENV_JS_DOMAIN) or None,
            "js_api_prefix": env.get(ENV_JS_API_PREFIX) or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values["servers"], str):
            values["servers"] = split_servers(values["servers"])
        options = cls(**values)  # type: ignore[arg-type]
        try:
            options.api_prefix  # noqa: B018 - validates the domain / prefix
        except ValueError as exc:
            raise ConnectError(options.shown_servers, str(exc)) from exc
        return options

    def file_problem(self) -> str | None:
        """Why the credentials or nkey seed file cannot be used, or None."""
        for what, path in (("credentials", self.creds), ("nkey seed", self.nkey_seed)):
            if path is None:
                continue
            if not os.path.isfile(path):
                return f"{what} file {path} not found"
            if importlib.util.find_spec("nkeys") is None:
                return f"a {what} file needs the nkeys package: pip install 'natstopo[nkeys]' (or 'nats-py[nkeys]')"
        return None

    def auth_kwargs(self) -> dict[str, object]:
        """`nats.connect` keyword arguments for authentication, TLS and the inbox prefix.

        Raises:
            ConnectError: A credentials, nkey seed or TLS file cannot be used.
        """
        kwargs: dict[str, object] = {}
        if self.user is not None:
            kwargs["user"] = self.user
            kwargs["password"] = self.password or ""
        if self.token is not None:
            kwargs["token"] = self.token
        problem = self.file_problem()
        if problem:
            raise ConnectError(self.shown_servers, problem)
        if self.creds is not None:
            kwargs["user_credentials"] = self.creds
        if self.nkey_seed is not None:
            kwargs["nkeys_seed"] = self.nkey_seed
        try:
            tls = self.tls_context()
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(self.shown_servers, f"cannot load TLS files: {exc}") from exc
        if tls is not None:
            kwargs["tls"] = tls
        if self.inbox_prefix is not None:
            kwargs["inbox_prefix"] = self.inbox_prefix
        return kwargs

    def tls_context(self) -> ssl.SSLContext | None:
        """An SSL context when any TLS option is set, else None (plain or tls:// URLs)."""
        if not (self.tls_ca or self.tls_cert or self.tls_key):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx


def split_servers(value: str | Sequence[str]) -> tuple[str, ...]:
    """Server URLs from a comma-separated string or a list (each item may hold commas)."""
    items = [value] if isinstance(value, str) else list(value)
    out = [s.strip() for item in items for s in item.split(",") if s.strip()]
    return tuple(u if "://" in u else f"nats://{u}" for u in out)


def add_connect_args(p: argparse.ArgumentParser) -> None:
    """`--server` and the authentication and TLS flags (each falls back to its NATS_* variable)."""
    g = p.add_argument_group("connection (flags win over NATS_URL, NATS_USER, ... variables)")
    g.add_argument(
        "-s",
        "--server",
        dest="servers",
        action="append",
        default=None,
        metavar="URL",
        help=f"NATS server URL, repeatable or comma-separated (default: ${ENV_URL}, else {DEFAULT_SERVER})",
    )
    g.add_argument("--user", default=None, help=f"user name (${ENV_USER})")
    g.add_argument("--password", default=None, help=f"password (${ENV_PASSWORD})")
    g.add_argument("--token", default=None, help=f"authentication token (${ENV_TOKEN})")
    g.add_argument("--creds", default=None, metavar="FILE", help=f"credentials file (${ENV_CREDS})")
    g.add_argument("--nkey", default=None, metavar="FILE", help=f"nkey seed file (${ENV_NKEY})")
    g.add_argument("--tls-ca", default=None, metavar="FILE", help=f"CA certificate (${ENV_CA})")
    g.add_argument(
        "--tls-cert", default=None, metavar="FILE", help=f"client certificate (${ENV_CERT})"
    )
    g.add_argument("--tls-key", default=None, metavar="FILE", help=f"client key (${ENV_KEY})")
    g.add_argument(
        "--inbox-prefix",
        default=None,
        metavar="PREFIX",
        help=f"prefix of reply inboxes that the server lets this identity read (${ENV_INBOX_PREFIX})",
    )
    g.add_argument(
        "--js-domain",
        default=None,
        metavar="DOMAIN",
        help=f"JetStream domain to manage, e.g. a hub from a leaf node (${ENV_JS_DOMAIN})",
    )
    g.add_argument(
        "--js-api-prefix",
        default=None,
        metavar="PREFIX",
        help=f"JetStream API prefix of an imported JetStream (${ENV_JS_API_PREFIX})",
    )
    g.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds per connection attempt (default {DEFAULT_CONNECT_TIMEOUT:g})",
    )


def options_from_args(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> ConnectOptions:
    """ConnectOptions from the flags of `add_connect_args`, falling back to the environment."""
    return ConnectOptions.from_env(
        env,
        servers=split_servers(args.servers) if args.servers else None,
        user=args.user,
        password=args.password,
        token=args.token,
        creds=args.creds,
        nkey_seed=args.nkey,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        inbox_prefix=getattr(args, "inbox_prefix", None),
        connect_timeout=args.connect_timeout,
        js_domain=getattr(args, "js_domain", None),
        js_api_prefix=getattr(args, "js_api_prefix", None),
    )


class TlsNotOfferedError(NatsError):
    """TLS is required (a `tls://` URL or a TLS option) and the server does not offer it."""

    def __str__(self) -> str:
        return "TLS is required (tls:// or a --tls option) but the server does not offer TLS"


class _TlsRequiredClient(Client):
    """A client that refuses a server without TLS before it sends any credentials.

    nats-py upgrades to TLS only when the server's INFO says `tls_required`; with a CA or
    a `tls://` URL against a plain server it would send the password in the clear. The
    INFO is checked here, before CONNECT; a server that offers TLS without requiring it
    (`allow_non_tls`) is upgraded.
    """

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection:
            if not (info.get("tls_required") or info.get("tls_available")):
                raise TlsNotOfferedError()
            info["tls_required"] = True
        await super()._process_info(info, initial_connection)


def new_client(options: ConnectOptions) -> Client:
    """The client to connect with `options`: one that refuses a server without TLS before
    sending credentials when TLS is required (`tls://` or a TLS option), else nats-py's.

    Connect it with `await client.connect(**kwargs)` (kwargs from `auth_kwargs()` and the
    caller's own); the runtime's bus can use it the same way.
    """
    return _TlsRequiredClient() if options.tls_required else Client()


def _reason(exc: BaseException | None, timeout: float) -> str:
    """A short, human reason for a failed connection attempt."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TlsNotOfferedError):
            return str(exc)
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, socket.gaierror):
            return f"unknown host ({exc.strerror or exc})"
        if isinstance(exc, AuthorizationError):
            return "authorization failed (check user/password, token or credentials)"
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake failed: {exc.reason or exc}"
        if isinstance(exc, asyncio.TimeoutError | TimeoutError):
            return f"no answer within {timeout:g}s"
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror.lower()
        if isinstance(exc, NatsError) and not isinstance(exc, NoServersError):
            text = str(exc).removeprefix("nats: ").strip().strip("'")
            if "authorization violation" in text.lower():
                return "authorization failed (check user/password, token or credentials)"
            if text:
                return text
        exc = exc.__cause__ or exc.__context__
    return "no server answered"


async def connect(options: ConnectOptions | None = None) -> Client:
    """A connected NATS client.

    Raises:
        ConnectError: No server could be reached or authentication failed; one line.
    """
    options = options or ConnectOptions.from_env()
    errors: list[BaseException] = []
    client = new_client(options)

    async def on_error(exc: Exception) -> None:
        # A refused request is dropped and only times out: keep the server's reason for it.
        if record_violation(client, exc):
            return
        # nats-py would log each failed attempt with a traceback; keep them for the message.
        errors.append(exc)

    kwargs: dict[str, object] = {
        "servers": list(options.servers),
        "name": options.name,
        "connect_timeout": options.connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": options.max_reconnect_attempts,
        "reconnect_time_wait": 0.2,
        "error_cb": on_error,
    }
    kwargs.update(options.auth_kwargs())
    try:
        await client.connect(**kwargs)  # type: ignore[arg-type]
        return client
    except (TimeoutError, OSError, NatsError) as exc:
        # Retries of a refused login can end in "connection reset" (the server closes right
        # after its -ERR): an authorization failure seen on any attempt is the real reason.
        reasons = [_reason(e, options.connect_timeout) for e in (*errors, exc)]
        auth = [r for r in reasons if r.startswith("authorization failed")]
        tls_refused = [r for r in reasons if r.startswith("TLS is required")]
        # With TLS 1.3 a server refusing the client's certificate closes the connection after
        # the client's side of the handshake: one attempt reads the alert, another only a
        # broken pipe. The handshake failure seen on any attempt is the reason.
        tls_failed = [r for r in reasons if r.startswith("TLS handshake failed")]
        reason = (auth or tls_refused or tls_failed or [reasons[-2] if errors else reasons[-1]])[0]
        raise ConnectError(options.shown_servers, options.redact(reason)) from exc
