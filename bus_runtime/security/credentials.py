"""Credentials: making them, keeping them in a folder, reading them back to connect.

`natstopo auth render --out DIR` keeps one folder per environment:

- `DIR/identities.json`: every identity's valid credentials, public halves only (user and
  bcrypt hash, or public nkey), numbered by generation; what `auth.conf` is made from.
- `DIR/<identity>.env`: the newest secret as `NATS_*` variables (`NATS_USER` and
  `NATS_PASSWORD`, or `NATS_NKEY` naming `DIR/<identity>.nk`), and `NATS_INBOX_PREFIX`.
- `DIR/auth.conf`: the server's authorization include (`authorization.py`).

Every file is written 0600 (the folder 0700) by a rename, so a config reloader never reads
half a file. Rendering again changes nothing: a secret is made once and its hash is kept
while it still matches. A rotation (`rotate`) adds a generation and keeps the older ones
valid; `retire` drops all but the newest: see docs/security.md for the procedure.

The runtime side is `connect_kwargs`: `nats.connect` keyword arguments from explicit
values, an env file or the `NATS_*` variables, with the service's own inbox prefix.
Secrets never appear in a message of this module, nor in a repr.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .._errors import SetupError
from ..jetstream.connect import (
    ENV_INBOX_PREFIX,
    ENV_JS_API_PREFIX,
    ENV_JS_DOMAIN,
    ENV_NKEY,
    ENV_PASSWORD,
    ENV_URL,
    ENV_USER,
    ConnectOptions,
)
from ..topology.model import Topology
from .authorization import PublicCredential, render_authorization
from .permissions import (
    ADMIN,
    DLQ_OPERATOR,
    MONITOR,
    all_permissions,
    check_identity_names,
    inbox_prefix,
)

PASSWORD = "password"
NKEY = "nkey"
AUTH_MODES = (PASSWORD, NKEY)
DEFAULT_BCRYPT_COST = 11
STATE_FILE = "identities.json"
AUTH_FILE = "auth.conf"
STATE_VERSION = 1
_EXTRA_HINT = "pip install 'natstopo[auth]'"
_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:@,+=%-]*$")


class MissingExtraError(SetupError):
    """A package of the `auth` extra is not installed; the message says how to install it."""

    def __init__(self, package: str, what: str) -> None:
        self.package = package
        super().__init__(f"{what} need the {package} package: {_EXTRA_HINT}")


def _bcrypt() -> ModuleType:
    try:
        import bcrypt
    except ImportError:
        raise MissingExtraError("bcrypt", "password credentials") from None
    return bcrypt


def _nkeys() -> ModuleType:
    try:
        # nkeys ships no type information; its three functions used here are simple.
        nkeys = importlib.import_module("nkeys")
    except ImportError:
        raise MissingExtraError("nkeys", "nkey credentials") from None
    return nkeys


def new_password() -> str:
    """A random password: 256 bits, URL-safe characters (fine in env files and shells)."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, cost: int = DEFAULT_BCRYPT_COST) -> str:
    """The bcrypt hash (`$2a$`) of `password` that the server's config holds.

    Raises:
        MissingExtraError: bcrypt is not installed.
    """
    bcrypt = _bcrypt()
    salt = bcrypt.gensalt(rounds=cost, prefix=b"2a")
    return str(bcrypt.hashpw(password.encode(), salt).decode())


def password_matches(password: str, password_hash: str) -> bool:
    """Whether `password_hash` is a hash of `password`."""
    bcrypt = _bcrypt()
    try:
        return bool(bcrypt.checkpw(password.encode(), password_hash.encode()))
    except ValueError:
        return False


def new_nkey() -> tuple[str, str]:
    """A new user nkey: (seed `SU...`, public key `U...`).

    Raises:
        MissingExtraError: nkeys is not installed.
    """
    nkeys = _nkeys()
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), public_nkey(seed.decode())


def public_nkey(seed: str) -> str:
    """The public key of a user nkey seed."""
    nkeys = _nkeys()
    kp = nkeys.from_seed(bytearray(seed.encode()))
    try:
        return str(kp.public_key.decode())
    finally:
        kp.wipe()


# -- files ---------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, atomically (a temporary file, then a rename)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_if_changed(path: Path, text: str) -> None:
    # An unchanged file keeps its mtime: a config reloader watching it does nothing.
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    write_private(path, text)


def _env_value(key: str, value: str) -> str:
    if _PLAIN_VALUE.match(value):
        return value
    if "'" in value or "\n" in value:
        raise SetupError(f"the value of {key} cannot be written to an env file (quote or newline)")
    return f"'{value}'"


def format_env_file(values: Mapping[str, str], comment: str = "") -> str:
    """`KEY=value` lines (a shell, docker's --env-file and systemd read them alike)."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + "".join(f"{k}={_env_value(k, v)}\n" for k, v in values.items())


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables of an env file written by `format_env_file` (or by hand, same syntax).

    Raises:
        SetupError: The file is missing or a line is not `KEY=value`; the message names
            the line number, never its text (it may hold a secret).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SetupError(f"cannot read {p}: {exc.strerror or exc}") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if not m:
            raise SetupError(f"{p}:{number}: not a KEY=value line")
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[m.group(1)] = value
    return out


# -- the runtime: connect options -------------------------------------------------------


def service_connect_options(
    service: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = None,
    **explicit: Any,
) -> ConnectOptions:
    """How `service` connects: explicit values, else the env file, else `NATS_*` variables.

    Args:
        service: The service the connection runs as; gives the inbox prefix
            (`_INBOX.<service>`) when neither `inbox_prefix` nor `NATS_INBOX_PREFIX` is set.
        env: The variables to read (default: `os.environ`).
        env_file: A file of `NATS_*` variables (`DIR/<service>.env`), read over `env`.
        **explicit: `ConnectOptions` fields (`servers`, `user`, `password`, `token`,
            `creds`, `nkey_seed`, `tls_ca`, `tls_cert`, `tls_key`, `inbox_prefix`); None
            means "not given".

    Raises:
        SetupError: The env file cannot be read, or an unknown option is given.
    """
    variables = dict(os.environ if env is None else env)
    if env_file is not None:
        variables.update(read_env_file(env_file))
    known = set(ConnectOptions.__dataclass_fields__)
    unknown = sorted(set(explicit) - known)
    if unknown:
        raise SetupError(f"unknown connect option(s): {', '.join(unknown)}")
    if service is not None and not variables.get(ENV_INBOX_PREFIX):
        variables[ENV_INBOX_PREFIX] = inbox_prefix(service)
    return ConnectOptions.from_env(variables, **explicit)


def connect_kwargs(
    service: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = None,
    **explicit: Any,
) -> dict[str, object]:
    """`nats.connect` keyword arguments for `service`: credentials, TLS, `inbox_prefix`.

    The servers are not included (the caller has them); see `service_connect_options`
    for where each value comes from.

    Raises:
        SetupError: The env file cannot be read, or an unknown option is given.
        ConnectError: A credentials, nkey seed or TLS file cannot be used.
    """
    return service_connect_options(service, env=env, env_file=env_file, **explicit).auth_kwargs()


# -- the folder -------------------------------------------------------------------------


@dataclass
class Generation:
    """One credential of an identity, as the state file keeps it (public half only)."""

    number: int
    user: str | None = None
    password_hash: str | None = None
    nkey: str | None = None

    def public(self, identity: str) -> PublicCredential:
        return PublicCredential(identity, self.user, self.password_hash, self.nkey)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"generation": self.number}
        for key in ("user", "password_hash", "nkey"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass
class RenderResult:
    """What `render_directory` did (names only, never a secret).

    Attributes:
        directory: The folder.
        auth_file: The authorization include.
        env_files: Each identity's env file.
        created: Identities that got their first credential.
        rotated: Identities that got a new generation (the older ones stay valid).
        retired: Identities whose older generations were dropped.
        removed: Identities no longer in the topology, whose files were deleted.
        valid: Identity -> how many credentials the authorization accepts.
    """

    directory: Path
    auth_file: Path
    env_files: dict[str, Path] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    valid: dict[str, int] = field(default_factory=dict)


class CredentialStore:
    """The credentials folder of one topology and environment (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def auth_path(self) -> Path:
        return self.directory / AUTH_FILE

    def env_path(self, identity: str) -> Path:
        return self.directory / f"{identity}.env"

    def seed_path(self, identity: str) -> Path:
        return self.directory / f"{identity}.nk"

    def load_state(self) -> tuple[str | None, dict[str, list[Generation]]]:
        """(mode, identity -> generations), or (None, {}) for a new folder."""
        if not self.state_path.exists():
            return None, {}
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            mode = data["mode"]
            identities = {
                name: [
                    Generation(
                        int(g["generation"]), g.get("user"), g.get("password_hash"), g.get("nkey")
                    )
                    for g in gens
                ]
                for name, gens in data["identities"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SetupError(
                f"{self.state_path}: not a natstopo credentials state ({exc})"
            ) from None
        if mode not in AUTH_MODES:
            raise SetupError(f"{self.state_path}: unknown mode {mode!r}")
        return mode, identities

    def credentials(self) -> dict[str, list[PublicCredential]]:
        """Identity -> its valid public credentials, oldest first."""
        _mode, identities = self.load_state()
        return {i: [g.public(i) for g in gens] for i, gens in identities.items()}

    def _read_secret(
        self, mode: str, identity: str, gen: Generation
    ) -> tuple[str, str | None] | None:
        """(secret, NATS_URL) from the env file when it holds the secret of `gen`, else None."""
        path = self.env_path(identity)
        if not path.exists():
            return None
        values = read_env_file(path)
        url = values.get(ENV_URL)
        if mode == PASSWORD:
            password = values.get(ENV_PASSWORD)
            if (
                values.get(ENV_USER) == gen.user
                and password is not None
                and gen.password_hash is not None
                and password_matches(password, gen.password_hash)
            ):
                return password, url
            return None
        seed_file = values.get(ENV_NKEY)
        if not seed_file or not os.path.isfile(seed_file):
            # The folder may have moved since NATS_NKEY was written: the seed is beside it.
            seed_file = str(self.seed_path(identity))
            if not os.path.isfile(seed_file):
                return None
        seed = Path(seed_file).read_text(encoding="utf-8").strip()
        try:
            matches = public_nkey(seed) == gen.nkey
        except Exception:  # nkeys raises its own error types for a damaged seed
            matches = False
        return (seed, url) if matches else None

    def _new_generation(
        self, mode: str, identity: str, number: int, cost: int
    ) -> tuple[Generation, str]:
        if mode == PASSWORD:
            password = new_password()
            gen = Generation(number, user=f"{identity}.{number}")
            gen.password_hash = hash_password(password, cost)
            return gen, password
        seed, public = new_nkey()
        return Generation(number, nkey=public), seed

    def _write_secret(
        self,
        mode: str,
        identity: str,
        gen: Generation,
        secret: str,
        topology: Topology,
        server_url: str | None,
        domain: str | None = None,
        api_prefix: str | None = None,
    ) -> None:
        values: dict[str, str] = {}
        if server_url:
            values[ENV_URL] = server_url
        if mode == PASSWORD:
            assert gen.user is not None
            values[ENV_USER] = gen.user
            values[ENV_PASSWORD] = secret
        else:
            seed_path = self.seed_path(identity)
            _write_if_changed(seed_path, secret + "\n")
            values[ENV_NKEY] = str(seed_path.resolve())
        values[ENV_INBOX_PREFIX] = inbox_prefix(identity)
        if api_prefix:  # a service: JetStream is imported into its account under this prefix
            values[ENV_JS_API_PREFIX] = api_prefix
        elif domain:  # the admin: the JetStream API is `$JS.<domain>.API`
            values[ENV_JS_DOMAIN] = domain
        env = topology.environment or "base"
        comment = (
            f"natstopo: credentials of `{identity}` (topology {topology.name}, environment "
            f"{env}, generation {gen.number}).\nSecret: keep this file private (0600)."
        )
        _write_if_changed(self.env_path(identity), format_env_file(values, comment))

    def render(
        self,
        topology: Topology,
        *,
        mode: str = PASSWORD,
        rotate: Iterable[str] = (),
        retire: Iterable[str] = (),
        server_url: str | None = None,
        cost: int = DEFAULT_BCRYPT_COST,
        account: str | None = None,
        domain: str | None = None,
    ) -> RenderResult:
        """Make the missing credentials, rotate or retire some, write every file.

        Args:
            topology: The model (one environment).
            mode: `password` (bcrypt-hashed in the config) or `nkey` (public keys).
            rotate: Identities that get a new credential; the older stays valid.
            retire: Identities whose older credentials stop being valid.
            server_url: Written as `NATS_URL` into every env file when given.
            cost: bcrypt cost of new hashes (11; lower only in tests).
            account: The JetStream account (default: the topology's name).
            domain: The servers' JetStream domain, if any.

        Raises:
            SetupError: Unknown identities named, one identity both rotated and retired,
                a mode other than the folder's, or a lost secret (restore it, or rotate).
            MissingExtraError: bcrypt (password) or nkeys (nkey) is not installed.
        """
        if mode not in AUTH_MODES:
            raise SetupError(f"mode must be one of {', '.join(AUTH_MODES)}, not {mode!r}")
        check_identity_names(topology)
        perms = all_permissions(topology, account=account, domain=domain)
        identities = list(perms)
        rotate, retire = list(dict.fromkeys(rotate)), list(dict.fromkeys(retire))
        for name in (*rotate, *retire):
            if name not in identities:
                raise SetupError(
                    f"`{name}` is not an identity of topology `{topology.name}` "
                    f"(services, `{ADMIN}`, `{DLQ_OPERATOR}`, `{MONITOR}`)"
                )
        both = sorted(set(rotate) & set(retire))
        if both:
            raise SetupError(
                f"{', '.join(f'`{b}`' for b in both)}: rotate and retire in two steps "
                "(retire only once every client uses the new credential)"
            )
        self._check_folder_is_for(topology)
        old_mode, state = self.load_state()
        if old_mode is not None and old_mode != mode:
            raise SetupError(
                f"{self.directory} holds {old_mode} credentials; render {mode} ones into another folder"
            )
        (_bcrypt if mode == PASSWORD else _nkeys)()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_mode & 0o077:
            self.directory.chmod(0o700)  # it holds secrets: nobody else may list or read it
        result = RenderResult(self.directory, self.auth_path)
        for identity in identities:
            gens = state.get(identity, [])
            current = self._read_secret(mode, identity, gens[-1]) if gens else None
            if gens and identity not in rotate and current is None:
                raise SetupError(
                    f"the secret of `{identity}` ({self.env_path(identity)}) is missing or does "
                    f"not match {self.state_path}; restore it, or make a new one with "
                    f"--rotate {identity}"
                )
            url = server_url
            if current is not None and url is None:
                url = current[1]
            if current is None or identity in rotate:
                number = gens[-1].number + 1 if gens else 1
                gen, secret = self._new_generation(mode, identity, number, cost)
                (result.rotated if gens else result.created).append(identity)
                gens = [*gens, gen]
            else:
                secret = current[0]
            self._write_secret(
                mode, identity, gens[-1], secret, topology, url, domain, perms[identity].api_prefix
            )
            if identity in retire and len(gens) > 1:
                gens = gens[-1:]
                result.retired.append(identity)
            state[identity] = gens
            result.env_files[identity] = self.env_path(identity)
            result.valid[identity] = len(gens)
        for gone in sorted(set(state) - set(identities)):
            del state[gone]
            for path in (self.env_path(gone), self.seed_path(gone)):
                if path.exists():
                    path.unlink()
            result.removed.append(gone)
        self._save_state(topology, mode, state)
        credentials = {i: [g.public(i) for g in state[i]] for i in identities}
        text = render_authorization(topology, credentials, account=account, domain=domain)
        _write_if_changed(self.auth_path, text)
        return result

    def _check_folder_is_for(self, topology: Topology) -> None:
        """Refuse a folder holding another topology's or environment's credentials (they
        would be reused under a new label: credentials are per service and environment),
        and env files without their state file (every credential would be replaced)."""
        if not self.state_path.exists():
            stray = sorted(self.directory.glob("*.env")) if self.directory.is_dir() else []
            if stray:
                raise SetupError(
                    f"{self.directory} holds env files ({stray[0].name} ...) but no "
                    f"{STATE_FILE}: rendering would replace every credential; restore "
                    f"{STATE_FILE}, or render into an empty folder"
                )
            return
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # load_state says what is wrong with it
        if not isinstance(data, dict):
            return
        held = (data.get("topology"), data.get("environment"))
        if held != (topology.name, topology.environment):
            raise SetupError(
                f"{self.directory} holds the credentials of topology `{held[0]}`, environment "
                f"`{held[1] or 'base'}`; render `{topology.name}` environment "
                f"`{topology.environment or 'base'}` into a folder of its own (credentials "
                "are made per service and environment, never shared)"
            )

    def _save_state(
        self, topology: Topology, mode: str, state: Mapping[str, Sequence[Generation]]
    ) -> None:
        data = {
            "version": STATE_VERSION,
            "topology": topology.name,
            "environment": topology.environment,
            "mode": mode,
            "identities": {i: [g.to_dict() for g in gens] for i, gens in state.items()},
        }
        _write_if_changed(self.state_path, json.dumps(data, indent=2) + "\n")
