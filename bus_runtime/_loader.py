"""Load a topology file: YAML -> JSON Schema -> effective settings -> semantic checks -> model.

Every problem is reported at its place, all at once: `load_topology` raises one
`TopologyValidationError` holding every `TopologyError`, sorted by line. Nothing here
opens a connection. Layering of settings, lowest first: built-in defaults, `defaults`,
the environment's `defaults`, the stream's (or consumer's) own fields, the environment's
`streams.<NAME>` overrides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import os
import reprlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.validators import validator_for

from ._errors import TopologyError, TopologyValidationError
from ._model import (
    CONSUMER_FIELD_TO_API,
    DEFAULT_CONCURRENCY,
    DEFAULT_FETCH_BATCH,
    DURATION_FIELDS,
    SIZE_FIELDS,
    STREAM_FIELD_TO_API,
    Consumer,
    Location,
    Service,
    Stream,
    Topic,
    Topology,
)
from ._schema_check import Check, Unsupported, compile_check
from ._subjects import NAME_PATTERN, SubjectIndex, subject_problem
from ._units import (
    MS,
    SECOND,
    UnitError,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from ._yaml import Locations, dotted, load_yaml
from ._yaml import Path as KeyPath

DEFAULT_TOPOLOGY = "topology/topology.yaml"
TOPOLOGY_ENV_VAR = "BUS_TOPOLOGY"

# natstopo's own defaults, under the file's `defaults`. The consumer ones are the source
# document's: explicit acks, 30 s ack wait, at most 3 deliveries, deliver all.
BUILTIN_STREAM: dict[str, Any] = {
    "retention": "limits",
    "storage": "file",
    "replicas": 1,
    "discard": "old",
}
BUILTIN_CONSUMER: dict[str, Any] = {
    "ack_policy": "explicit",
    "deliver_policy": "all",
    "ack_wait": 30 * SECOND,
    "max_deliver": 3,
    "fetch_batch": DEFAULT_FETCH_BATCH,
    "concurrency": DEFAULT_CONCURRENCY,
}
STREAM_SETTINGS = (*STREAM_FIELD_TO_API, "metadata", "dead_letter", "subject_prefix")
CONSUMER_SETTINGS = (*CONSUMER_FIELD_TO_API, "metadata", "fetch_batch", "concurrency")

_NAME_KINDS: dict[KeyPath, str] = {
    ("streams",): "stream name",
    ("services",): "service name",
    ("environments",): "environment name",
}


@cache
def topology_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the topology format, shipped as package data."""
    text = resources.files("bus_runtime").joinpath("schema/topology.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _is_integer(_checker: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


# JSON Schema counts 3.0 as an integer; the server's Go structs refuse `"num_replicas": 3.0`,
# so a float never passes for an integer here.
_StrictValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # untyped upstream
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


@cache
def _validator() -> Draft202012Validator:
    validator: Draft202012Validator = _StrictValidator(topology_schema())
    return validator


@cache
def _fast_check() -> Check:
    try:
        return compile_check(topology_schema())
    except Unsupported:
        return lambda _doc: False


def default_topology_path() -> str:
    """`$BUS_TOPOLOGY` when set, else `topology/topology.yaml`."""
    return os.environ.get(TOPOLOGY_ENV_VAR) or DEFAULT_TOPOLOGY


def load_topology(
    path: str | os.PathLike[str] | None = None, environment: str | None = None
) -> Topology:
    """Load, validate and build the effective topology for `environment`.

    Raises:
        TopologyValidationError: Every problem found, each at its file:line:col.
    """
    topology, errors = check_topology(path, environment)
    if errors or topology is None:
        raise TopologyValidationError(errors)
    return topology


def check_topology(
    path: str | os.PathLike[str] | None = None,
    environment: str | None = None,
    *,
    all_environments: bool = False,
) -> tuple[Topology | None, list[TopologyError]]:
    """Validate a topology file; returns the model (when valid) and every error.

    With `all_environments`, the base and every declared environment are checked, so a
    bad override in any environment is reported (what `natstopo validate` does without
    `--env`). The returned model is then the base one.
    """
    file = str(path if path is not None else default_topology_path())
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [TopologyError(file, 0, 0, "", "file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [TopologyError(file, 0, 0, "", f"cannot read the file: {exc}")]
    return parse_topology(
        text,
        file,
        base_dir=Path(file).parent,
        environment=environment,
        all_environments=all_environments,
    )


def parse_topology(
    text: str,
    file: str,
    *,
    base_dir: Path | None = None,
    environment: str | None = None,
    all_environments: bool = False,
) -> tuple[Topology | None, list[TopologyError]]:
    """Validate topology text (see `check_topology`); `base_dir` resolves schema paths."""
    with _gc_paused():
        return _parse(text, file, base_dir, environment, all_environments)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a topology is built.

    Loading allocates hundreds of thousands of long-lived, acyclic objects (YAML nodes,
    dicts); the collector would rescan them again and again (measured: 2/3 of the time
    for a 10,000-topic file). Nothing built here forms cycles that need it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(
    text: str,
    file: str,
    base_dir: Path | None,
    environment: str | None,
    all_environments: bool,
) -> tuple[Topology | None, list[TopologyError]]:
    data, locs, errors = load_yaml(text, file)
    if errors and data is None:
        # Syntax errors stop here; duplicate keys are reported with everything else.
        return None, errors
    if data is None:
        return None, [
            TopologyError(
                file,
                1,
                1,
                "",
                "the file is empty: expected a mapping with `version: 1`, `name` and `streams`",
            )
        ]
    if not isinstance(data, dict):
        line, col = locs.of_value(())
        kind = type(data).__name__
        return None, [
            TopologyError(
                file,
                line,
                col,
                "",
                f"expected a mapping with `version`, `name` and `streams` at the top, got a {kind}",
            )
        ]
    checker = _Checker(data, locs, base_dir or Path(file).parent)
    checker.check_schema()
    checker.check_structure()
    envs = checker.environment_names()
    topology: Topology | None = None
    if environment is not None and environment not in envs:
        close = get_close_matches(environment, envs, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        declared = ", ".join(envs) or "none"
        at = ("environments",) if "environments" in data else ()
        checker.errors.append(
            locs.error(
                at,
                f"environment `{environment}` is not declared (declared: {declared}){hint}",
                at_key=True,
            )
        )
    else:
        topology = checker.build(environment)
        if all_environments and environment is None:
            base = set(checker.errors)
            base_warnings = set(checker.warnings)
            for env in envs:
                start, wstart = len(checker.errors), len(checker.warnings)
                checker.build(env)
                checker.errors[start:] = [
                    _in_environment(e, env) for e in checker.errors[start:] if e not in base
                ]
                checker.warnings[wstart:] = [
                    _in_environment(w, env)
                    for w in checker.warnings[wstart:]
                    if w not in base_warnings
                ]
            if topology is not None:
                # The base model reports what any environment would warn about too.
                warnings = tuple(sorted(set(checker.warnings)))
                topology = dataclasses.replace(topology, warnings=warnings)
    all_errors = sorted(set(errors + checker.errors))
    return (None if all_errors else topology), all_errors


def _in_environment(error: TopologyError, env: str) -> TopologyError:
    """An error that only `env`'s overrides cause names the environment, unless its path does.

    (A base `duplicate_window: 2m` is fine until dev sets `max_age: 1m`: the error is at
    the base key, and without this the reader would look for a 1m max_age there.)
    """
    if error.path == f"environments.{env}" or error.path.startswith(f"environments.{env}."):
        return error
    return dataclasses.replace(error, message=f"{error.message} (in environment `{env}`)")


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict)


@dataclass
class _Setting:
    """An effective value and the key path that set it (None: a built-in default)."""

    value: Any
    path: KeyPath | None


@dataclass
class _Checker:
    data: dict[str, Any]
    locs: Locations
    base_dir: Path
    errors: list[TopologyError] = field(default_factory=list)
    warnings: list[TopologyError] = field(default_factory=list)
    # Key paths whose value the schema already refused: not parsed again.
    bad_paths: set[KeyPath] = field(default_factory=set)
    _schemas: dict[str, tuple[Mapping[str, Any] | None, str | None]] = field(default_factory=dict)

    # -- helpers ---------------------------------------------------------------------
    def err(self, path: KeyPath, message: str, *, at_key: bool = False) -> None:
        self.errors.append(self.locs.error(path, message, at_key=at_key))

    def warn(self, path: KeyPath, message: str, *, at_key: bool = False) -> None:
        e = self.locs.error(path, message, at_key=at_key)
        self.warnings.append(dataclasses.replace(e, severity="warning"))

    def mapping(self, *path: str) -> dict[str, Any]:
        node: Any = self.data
        for p in path:
            if not isinstance(node, dict):
                return {}
            node = node.get(p)
        return node if isinstance(node, dict) else {}

    def streams(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.mapping("streams").items() if isinstance(v, dict)}

    def environment_names(self) -> list[str]:
        return list(self.mapping("environments"))

    # -- 1. the JSON Schema ------------------------------------------------------------
    def check_schema(self) -> None:
        if _fast_check()(self.data):
            return
        for error in _validator().iter_errors(self.data):
            self._schema_error(error)

    def _schema_error(self, e: ValidationError) -> None:
        path: KeyPath = tuple(e.absolute_path)
        kind = e.validator
        sub: dict[str, Any] = e.schema if isinstance(e.schema, dict) else {}
        if kind == "additionalProperties" and isinstance(e.instance, dict):
            allowed = list(sub.get("properties", {}))
            for key in e.instance:
                if key in allowed:
                    continue
                self.bad_paths.add((*path, key))
                hint = _did_you_mean(key, allowed)
                if not hint:
                    hint = f" (expected one of: {', '.join(allowed)})"
                where = f" in `{dotted(path)}`" if path else " at the top level"
                self.err((*path, key), f"unknown key `{key}`{where}{hint}", at_key=True)
            return
        if kind == "propertyNames" or "propertyNames" in e.schema_path:
            # A key that breaks the naming rule: the error's path is its parent mapping.
            key = str(e.instance)
            self.bad_paths.add((*path, key))
            self.err((*path, key), self._name_message(path, key), at_key=True)
            return
        self.bad_paths.add(path)
        leaf = str(path[-1]) if path else ""
        if kind == "enum":
            choices = [str(c) for c in sub.get("enum", [])]
            hint = _did_you_mean(str(e.instance), choices)
            self.err(path, f"{_short(e.instance)} is not one of {', '.join(choices)}{hint}")
        elif kind == "required":
            missing = e.message.split("'")[1] if "'" in e.message else e.message
            self.err(path, f"missing required key `{missing}`")
        elif kind == "type":
            expected = e.validator_value
            if isinstance(expected, list):
                expected = " or ".join(expected)
            got = (
                f"{type(e.instance).__name__} ({_short(e.instance)})"
                if e.instance is not None
                else "nothing (null)"
            )
            self.err(path, f"expected {_article(str(expected))}, got {got}")
        elif kind == "pattern":
            self.err(path, self._pattern_message(leaf, e))
        elif kind in ("minimum", "maximum"):
            lo = sub.get("minimum")
            hi = sub.get("maximum")
            if sub.get("$ref") or (leaf in DURATION_FIELDS | SIZE_FIELDS):
                self.err(path, f"{_short(e.instance)} is out of range")
            elif lo is not None and hi is not None:
                self.err(path, f"`{leaf}` must be between {lo} and {hi}; got {_short(e.instance)}")
            elif lo is not None:
                self.err(path, f"`{leaf}` must be at least {lo}; got {_short(e.instance)}")
            else:
                self.err(path, f"`{leaf}` must be at most {hi}; got {_short(e.instance)}")
        elif kind == "const" and path == ("version",):
            self.err(
                path,
                f"unsupported format version {_short(e.instance)}: this natstopo reads version 1",
            )
        elif kind == "not" and leaf == "max_deliver":
            self.err(path, "`max_deliver` cannot be 0: use a positive number, or -1 for unlimited")
        elif kind == "maxLength" and isinstance(e.instance, str):
            self.err(
                path,
                f"`{leaf}` is {len(e.instance)} characters long; at most {e.validator_value}",
            )
        elif kind == "minItems":
            self.err(path, f"`{leaf}` must not be empty")
        elif kind == "uniqueItems":
            self.err(path, f"`{leaf}` lists the same item twice")
        elif kind == "minProperties":
            self.err(path, f"`{leaf}` must declare at least one entry")
        else:
            self.err(path, _clip(e.message, 200))

    def _name_message(self, parent: KeyPath, key: str) -> str:
        kind = _NAME_KINDS.get(parent)
        if kind is None and parent:
            last = parent[-1]
            kind = {
                "topics": "topic name",
                "consumers": "consumer (durable) name",
                "streams": "stream name",
                "metadata": "metadata key",
            }.get(str(last), "name")
        if kind in ("stream name", "consumer (durable) name"):
            return (
                f"`{key}` is not a valid {kind}: 1 to 255 characters, none of whitespace, "
                "`.`, `*`, `>`, `/`, `\\`"
            )
        if kind in ("service name", "environment name"):
            return f"`{key}` is not a valid {kind}: lower-case letters, digits and `-` (like `svc-ocr`)"
        if kind == "topic name":
            problem = subject_problem(key, allow_gt=False) or "tokens separated by dots"
            return f"`{key}` is not a valid topic name: {problem}; `>` is not allowed in a topic"
        if kind == "metadata key":
            return f"metadata key `{key}` is reserved: keys starting with `natstopo.` are natstopo's own"
        return f"`{key}` is not a valid {kind}"

    def _pattern_message(self, leaf: str, e: ValidationError) -> str:
        value = _clip(e.instance, 80) if isinstance(e.instance, str) else e.instance
        in_backoff = len(e.absolute_path) >= 2 and e.absolute_path[-2] == "backoff"
        if leaf in DURATION_FIELDS or in_backoff:
            try:
                ns = parse_duration(value)
            except UnitError as exc:
                return str(exc)
            # The parser is more lenient than the schema (spaces around it).
            return f"{value!r} is not written as a duration (did you mean '{format_duration(ns)}'?)"
        if leaf in SIZE_FIELDS:
            try:
                size = parse_size(value)
            except UnitError as exc:
                return str(exc)
            # The parser is more lenient than the schema (`1k`, `1Kb`).
            return (
                f"{value!r} is not written as a size: units are KB, MB, GB, TB (powers of 1000) "
                f"and KiB, MiB, GiB, TiB (powers of 1024) (did you mean '{format_size(size)}'?)"
            )
        if leaf in ("service", "publishers") or (
            e.absolute_path and len(e.absolute_path) >= 2 and e.absolute_path[-2] == "publishers"
        ):
            return f"`{value}` is not a valid service name: lower-case letters, digits and `-`"
        if leaf == "subject_prefix":
            problem = subject_problem(str(value), allow_wildcards=False) or "dot-separated tokens"
            return f"`{value}` is not a valid subject prefix: {problem}"
        if leaf == "dead_letter":
            return f"`{value}` is not a valid stream name"
        if leaf == "name":
            return f"`{value}` is not a valid system name: lower-case letters, digits and `-`"
        if e.validator_value == NAME_PATTERN:
            return f"`{value}` is not a valid name"
        return f"{_short(value)} does not have the expected form"

    # -- 2. references that do not depend on the environment ---------------------------
    def check_structure(self) -> None:
        services = self.mapping("services")
        streams = self.streams()
        self._check_byte_lengths(streams)
        topic_owner: dict[str, str] = {}
        for sname, s in streams.items():
            for tname, t in self._topics(s).items():
                tpath: KeyPath = ("streams", sname, "topics", tname)
                if tname in topic_owner:
                    self.err(
                        tpath,
                        f"topic `{tname}` is also declared in stream `{topic_owner[tname]}`; "
                        "topic names are unique in a topology (they are what services publish)",
                        at_key=True,
                    )
                else:
                    topic_owner[tname] = sname
                pubs = t.get("publishers") if isinstance(t, dict) else None
                if isinstance(pubs, list):
                    for i, svc in enumerate(pubs):
                        if isinstance(svc, str) and svc not in services:
                            self.err(
                                (*tpath, "publishers", i),
                                f"publisher `{svc}` is not declared under `services`"
                                + _did_you_mean(svc, services),
                            )
                if isinstance(t, dict) and isinstance(t.get("schema"), str):
                    self._load_payload_schema(t["schema"], (*tpath, "schema"))
        for sname, s in streams.items():
            consumers = s.get("consumers")
            if not isinstance(consumers, dict):
                continue
            own_topics = self._topics(s)
            taken: dict[tuple[str, str], str] = {}
            for cname, c in consumers.items():
                if not isinstance(c, dict):
                    continue
                cpath: KeyPath = ("streams", sname, "consumers", cname)
                svc = c.get("service")
                if isinstance(svc, str) and svc not in services:
                    self.err(
                        (*cpath, "service"),
                        f"service `{svc}` is not declared under `services`"
                        + _did_you_mean(svc, services),
                    )
                topics = c.get("topics")
                names = (
                    [t for t in topics if isinstance(t, str)]
                    if isinstance(topics, list)
                    else list(own_topics)
                )
                if isinstance(topics, list):
                    for i, tname in enumerate(topics):
                        if not isinstance(tname, str) or tname in own_topics:
                            continue
                        if tname in topic_owner:
                            self.err(
                                (*cpath, "topics", i),
                                f"topic `{tname}` belongs to stream `{topic_owner[tname]}`, not "
                                f"`{sname}`: a consumer reads only its own stream's topics; "
                                f"declare it under streams.{topic_owner[tname]}.consumers",
                            )
                        else:
                            self.err(
                                (*cpath, "topics", i),
                                f"topic `{tname}` is not declared in stream `{sname}`"
                                + _did_you_mean(tname, own_topics),
                            )
                if isinstance(svc, str):
                    for tname in names:
                        other = taken.get((svc, tname), cname)
                        if other != cname and tname in own_topics:
                            self.err(
                                cpath,
                                f"service `{svc}` already consumes topic `{tname}` through consumer "
                                f"`{other}`; one consumer per service and topic, so "
                                "`subscribe(topic)` is unambiguous",
                                at_key=True,
                            )
                        taken.setdefault((svc, tname), cname)
        for env, e in self.mapping("environments").items():
            if not isinstance(e, dict):
                continue
            env_streams = e.get("streams")
            if not isinstance(env_streams, dict):
                continue
            for sname, so in env_streams.items():
                spath: KeyPath = ("environments", env, "streams", sname)
                if sname not in streams:
                    self.err(
                        spath,
                        f"environment `{env}` overrides stream `{sname}`, which is not declared"
                        + _did_you_mean(sname, streams),
                        at_key=True,
                    )
                    continue
                co = so.get("consumers") if isinstance(so, dict) else None
                declared = streams[sname].get("consumers")
                declared = declared if isinstance(declared, dict) else {}
                if isinstance(co, dict):
                    for cname in co:
                        if cname not in declared:
                            self.err(
                                (*spath, "consumers", cname),
                                f"environment `{env}` overrides consumer `{cname}`, which stream "
                                f"`{sname}` does not declare" + _did_you_mean(cname, declared),
                                at_key=True,
                            )

    def _check_byte_lengths(self, streams: dict[str, dict[str, Any]]) -> None:
        """The server measures names and descriptions in UTF-8 bytes; the schema, in characters."""

        def check(path: KeyPath, text: object, limit: int, what: str, at_key: bool) -> None:
            if isinstance(text, str) and len(text) <= limit < len(text.encode("utf-8")):
                size = len(text.encode("utf-8"))
                self.err(
                    path,
                    f"{what} is {size} bytes long in UTF-8; the server allows {limit}",
                    at_key=at_key,
                )

        places: list[tuple[KeyPath, dict[str, Any]]] = []
        for sname, s in streams.items():
            spath: KeyPath = ("streams", sname)
            check(spath, sname, 255, f"stream name `{sname}`", True)
            places.append((spath, s))
            consumers = s.get("consumers")
            for cname, c in (consumers if isinstance(consumers, dict) else {}).items():
                cpath: KeyPath = (*spath, "consumers", cname)
                check(cpath, cname, 255, f"consumer name `{cname}`", True)
                places.append((cpath, c))
        for env in self.mapping("environments"):
            for sname, so in self.mapping("environments", env, "streams").items():
                spath = ("environments", env, "streams", sname)
                places.append((spath, so))
                consumers = so.get("consumers") if isinstance(so, dict) else None
                for cname, c in (consumers if isinstance(consumers, dict) else {}).items():
                    places.append(((*spath, "consumers", cname), c))
        for path, node in places:
            if isinstance(node, dict):
                check((*path, "description"), node.get("description"), 4096, "description", False)

    def _topics(self, s: dict[str, Any]) -> dict[str, Any]:
        t = s.get("topics")
        return t if isinstance(t, dict) else {}

    def _load_payload_schema(
        self, rel: str, path: KeyPath
    ) -> tuple[Mapping[str, Any] | None, str | None]:
        if rel in self._schemas:
            cached = self._schemas[rel]
            if cached[0] is None:
                self.err(path, f"payload schema `{rel}` is not usable (see the error above)")
            return cached
        self._schemas[rel] = (None, None)
        file = self.base_dir / rel
        base = self.base_dir.resolve()
        if Path(rel).is_absolute() or not file.resolve().is_relative_to(base):
            # Topologies come from pull requests: a schema path must not read files
            # elsewhere on the machine that runs the check (and echo them in errors).
            self.err(
                path,
                f"payload schema path `{rel[:200]}` leaves the topology's folder ({base.name}/): "
                "use a path relative to the topology file, below its folder",
            )
            return self._schemas[rel]
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.err(path, f"payload schema file `{rel}` not found (looked for {file})")
            return self._schemas[rel]
        except (OSError, UnicodeDecodeError) as exc:
            self.err(path, f"cannot read payload schema `{rel}`: {exc}")
            return self._schemas[rel]
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            self.err(
                path,
                f"payload schema `{rel}` is not valid JSON: {exc.msg} at its line {exc.lineno}, column {exc.colno}",
            )
            return self._schemas[rel]
        if not isinstance(schema, dict):
            self.err(path, f"payload schema `{rel}` must be a JSON object (a JSON Schema)")
            return self._schemas[rel]
        try:
            cls = validator_for(schema, default=Draft202012Validator)
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            self.err(
                path, f"payload schema `{rel}` is not a valid JSON Schema at {where}: {exc.message}"
            )
            return self._schemas[rel]
        digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]
        result: tuple[Mapping[str, Any] | None, str | None] = (schema, digest)
        self._schemas[rel] = result
        return result

    # -- 3. effective settings for one environment, and the checks on them -----------
    def _layer(
        self, env: str | None, kind: str, own: KeyPath, env_own: KeyPath | None
    ) -> dict[str, _Setting]:
        builtin = BUILTIN_STREAM if kind == "stream" else BUILTIN_CONSUMER
        names = STREAM_SETTINGS if kind == "stream" else CONSUMER_SETTINGS
        out: dict[str, _Setting] = {k: _Setting(v, None) for k, v in builtin.items()}
        layers: list[KeyPath] = [("defaults", kind)]
        if env is not None:
            layers.append(("environments", env, "defaults", kind))
        layers.append(own)
        if env is not None and env_own is not None:
            layers.append(env_own)
        for layer in layers:
            mapping = self.mapping(*(str(p) for p in layer))
            for k in names:
                if k in mapping:
                    out[k] = _Setting(mapping[k], (*layer, k))
        return out

    def _value(self, s: dict[str, _Setting], key: str) -> Any:
        """The parsed effective value of `key`, or None when unset or invalid."""
        setting = s.get(key)
        if setting is None or setting.value is None:
            return None
        if setting.path is not None and setting.path in self.bad_paths:
            return None
        v = setting.value
        try:
            if key == "backoff":
                delays = self._parse_each(v, setting.path) if isinstance(v, list) else None
                return tuple(delays) if delays is not None else None
            if key in DURATION_FIELDS:
                return _int64(parse_duration(v), v, duration=True)
            if key in SIZE_FIELDS:
                return _int64(parse_size(v), v)
            if isinstance(v, int) and not isinstance(v, bool):
                return _int64(v, v)
        except UnitError as exc:
            if setting.path is not None:
                self.bad_paths.add(setting.path)
                self.err(setting.path, str(exc))
            return None
        if key == "metadata":
            return (
                tuple(sorted((str(a), str(b)) for a, b in v.items())) if isinstance(v, dict) else ()
            )
        return v

    def _parse_each(self, items: list[Any], path: KeyPath | None) -> list[int] | None:
        """Each delay parsed; None when one is bad (each bad one reported once, at itself)."""
        out = []
        for i, item in enumerate(items):
            try:
                out.append(_int64(parse_duration(item), item, duration=True))
            except UnitError as exc:
                if path is not None and (*path, i) not in self.bad_paths:
                    self.bad_paths.add((*path, i))
                    self.err((*path, i), str(exc))
        return out if len(out) == len(items) else None

    def _where(self, setting: _Setting | None, fallback: KeyPath) -> KeyPath:
        return setting.path if setting is not None and setting.path is not None else fallback

    def build(self, env: str | None) -> Topology | None:
        """The effective topology for `env` (errors go to self.errors; None if unusable)."""
        streams_data = self.streams()
        services = tuple(
            Service(name, (v or {}).get("description"), (v or {}).get("owner"))
            for name, v in self.mapping("services").items()
            if isinstance(v, dict) or v is None
        )
        built: list[Stream] = []
        dl_sources: dict[str, list[str]] = {}
        settings: dict[str, dict[str, _Setting]] = {}
        for sname in streams_data:
            ss = self._layer(
                env, "stream", ("streams", sname), ("environments", env or "", "streams", sname)
            )
            settings[sname] = ss
            dl = self._value(ss, "dead_letter")
            if isinstance(dl, str):
                where = self._where(ss.get("dead_letter"), ("streams", sname))
                if dl == sname:
                    self.err(where, f"stream `{sname}` cannot be its own dead_letter stream")
                elif dl not in streams_data:
                    self.err(
                        where,
                        f"dead_letter `{dl}` names no declared stream"
                        + _did_you_mean(dl, streams_data),
                    )
                else:
                    dl_sources.setdefault(dl, []).append(sname)
        index: SubjectIndex[tuple[str, str, KeyPath]] = SubjectIndex()
        for sname, s in streams_data.items():
            stream = self._build_stream(env, sname, s, settings, dl_sources.get(sname, []), index)
            if stream is not None:
                built.append(stream)
        return Topology(
            name=str(self.data.get("name", "")),
            environment=env,
            services=services,
            streams=tuple(built),
            environments=tuple(self.environment_names()),
            warnings=tuple(sorted(set(self.warnings))),
            description=self.data.get("description")
            if isinstance(self.data.get("description"), str)
            else None,
            source=Path(self.locs.file),
        )

    def _build_stream(
        self,
        env: str | None,
        sname: str,
        s: dict[str, Any],
        settings: dict[str, dict[str, _Setting]],
        dl_sources: list[str],
        index: SubjectIndex[tuple[str, str, KeyPath]],
    ) -> Stream | None:
        spath: KeyPath = ("streams", sname)
        if spath in self.bad_paths:
            return None
        ss = settings[sname]
        values = {k: self._value(ss, k) for k in STREAM_SETTINGS}
        if values["duplicate_window"] == 0:
            values["duplicate_window"] = None  # the server reads 0 as "its default" (2m)
        prefix = values["subject_prefix"] if isinstance(values["subject_prefix"], str) else sname
        # -- topics and subjects
        topics: list[Topic] = []
        subjects: list[tuple[str, str, KeyPath]] = []  # (subject, what, where)
        for tname, t in self._topics(s).items():
            tpath: KeyPath = (*spath, "topics", tname)
            if (*spath, "topics", tname) in self.bad_paths:
                continue
            t = t if isinstance(t, dict) else {}
            subject = f"{prefix}.{tname}"
            schema_file = t.get("schema") if isinstance(t.get("schema"), str) else None
            schema, digest = (None, None)
            if schema_file:
                schema, digest = self._schemas.get(schema_file, (None, None))
            pubs = t.get("publishers")
            line, col = self.locs.of_key(tpath)
            topics.append(
                Topic(
                    name=tname,
                    stream=sname,
                    subject=subject,
                    description=t.get("description")
                    if isinstance(t.get("description"), str)
                    else None,
                    publishers=tuple(p for p in pubs if isinstance(p, str))
                    if isinstance(pubs, list)
                    else (),
                    schema_file=schema_file,
                    schema=schema,
                    schema_digest=digest,
                    deprecated=bool(t.get("deprecated", False)),
                    location=Location(self.locs.file, line, col),
                )
            )
            subjects.append((subject, f"topic `{tname}`", tpath))
        for origin in dl_sources:
            origin_dl = settings[origin].get("dead_letter")
            where = self._where(origin_dl, ("streams", origin))
            subjects.append((f"{prefix}.{origin}.>", f"dead letters of `{origin}`", where))
        if not subjects:
            self.err(
                spath,
                f"stream `{sname}` has no subjects: declare `topics`, or name it as another "
                "stream's `dead_letter`",
                at_key=True,
            )
        for subject, what, where in subjects:
            for other_subject, (other_stream, other_what, _) in index.overlapping(subject):
                if other_stream == sname:
                    self.err(
                        where,
                        f"{what} (subject `{subject}`) overlaps {other_what} (subject "
                        f"`{other_subject}`) in the same stream `{sname}`; the server refuses "
                        "overlapping subjects in one stream",
                        at_key=True,
                    )
                else:
                    self.err(
                        where,
                        f"subject `{subject}` of stream `{sname}` ({what}) overlaps subject "
                        f"`{other_subject}` of stream `{other_stream}` ({other_what}); a message "
                        "can be stored by only one stream (server error 10065)",
                        at_key=True,
                    )
            index.add(subject, (sname, what, where))
        # -- effective settings checks
        self._check_stream_limits(sname, ss, values)
        line, col = self.locs.of_key(spath)
        consumers = [
            c
            for c in (
                self._build_consumer(env, sname, cname, c, values, {t.name: t for t in topics})
                for cname, c in (s.get("consumers") or {}).items()
                if isinstance(s.get("consumers"), dict)
                and isinstance(c, dict)
                and (*spath, "consumers", cname) not in self.bad_paths
            )
            if c is not None
        ]
        if values["retention"] == "workqueue":
            self._check_workqueue(sname, consumers, [x[0] for x in subjects])
        self._warn_unconsumed(sname, values["retention"], topics, consumers)
        if consumers and not isinstance(values["dead_letter"], str):
            self.warn(
                spath,
                f"stream `{sname}` has consumers but no `dead_letter`: a message that exhausts "
                "max_deliver stays in the stream, undelivered, and bus_runtime can only log it",
                at_key=True,
            )
        kwargs = {k: values[k] for k in STREAM_FIELD_TO_API}
        for k, default in BUILTIN_STREAM.items():
            if kwargs[k] is None:
                kwargs[k] = default
        return Stream(
            name=sname,
            subject_prefix=prefix,
            subjects=tuple(x[0] for x in subjects),
            topics=tuple(topics),
            consumers=tuple(consumers),
            metadata=values["metadata"] or (),
            dead_letter=values["dead_letter"] if isinstance(values["dead_letter"], str) else None,
            dead_letter_sources=tuple(dl_sources),
            location=Location(self.locs.file, line, col),
            **kwargs,
        )

    def _warn_unconsumed(
        self, sname: str, retention: Any, topics: list[Topic], consumers: list[Consumer]
    ) -> None:
        if retention not in ("interest", "workqueue"):
            return
        if any(not c.filter_subjects for c in consumers):
            return  # an unfiltered consumer takes every subject
        # A consumer's filters are its topics' subjects, and the topics of one stream never
        # overlap (refused above), so a topic is taken exactly when a consumer lists it.
        taken = {name for c in consumers for name in c.topics}
        for t in topics:
            if t.name not in taken:
                effect = (
                    "the server drops its events at once (interest retention keeps a message "
                    "only while a consumer's filter takes it)"
                    if retention == "interest"
                    else "its jobs pile up unprocessed"
                )
                self.warn(
                    ("streams", sname, "topics", t.name),
                    f"no consumer of {retention} stream `{sname}` takes topic `{t.name}`: {effect}",
                    at_key=True,
                )

    def _check_stream_limits(self, sname: str, ss: dict[str, _Setting], v: dict[str, Any]) -> None:
        spath: KeyPath = ("streams", sname)
        max_age, dw = v["max_age"], v["duplicate_window"]
        if isinstance(max_age, int) and 0 < max_age < 100 * MS:
            self.err(
                self._where(ss.get("max_age"), spath),
                f"max_age {format_duration(max_age)} is below the server's minimum of 100ms (0 keeps messages forever)",
            )
        if isinstance(dw, int):
            where = self._where(ss.get("duplicate_window"), spath)
            if dw < 100 * MS:
                self.err(
                    where,
                    f"duplicate_window {format_duration(dw)} is below the server's minimum of 100ms",
                )
            elif isinstance(max_age, int) and max_age >= 100 * MS and dw > max_age:
                self.err(
                    where,
                    f"duplicate_window {format_duration(dw)} is longer than max_age "
                    f"{format_duration(max_age)} of stream `{sname}`; the server refuses it",
                )
        marker_ttl = v["subject_delete_marker_ttl"]
        if isinstance(marker_ttl, int) and 0 < marker_ttl < SECOND:
            self.err(
                self._where(ss.get("subject_delete_marker_ttl"), spath),
                f"subject_delete_marker_ttl {format_duration(marker_ttl)} is below the server's "
                "minimum of 1s",
            )
        if v["discard_new_per_subject"]:
            mps = v["max_msgs_per_subject"]
            if v["discard"] != "new" or not (isinstance(mps, int) and mps > 0):
                self.err(
                    self._where(ss.get("discard_new_per_subject"), spath),
                    "discard_new_per_subject needs discard: new and max_msgs_per_subject > 0",
                )
        if v["deny_purge"] and v["allow_rollup_hdrs"]:
            self.err(
                self._where(ss.get("allow_rollup_hdrs"), spath),
                "allow_rollup_hdrs cannot be combined with deny_purge (a rollup purges)",
            )

    def _build_consumer(
        self,
        env: str | None,
        sname: str,
        cname: str,
        c: dict[str, Any],
        stream_values: dict[str, Any],
        topics: dict[str, Topic],
    ) -> Consumer | None:
        cpath: KeyPath = ("streams", sname, "consumers", cname)
        cs = self._layer(
            env,
            "consumer",
            cpath,
            ("environments", env or "", "streams", sname, "consumers", cname),
        )
        v = {k: self._value(cs, k) for k in CONSUMER_SETTINGS}
        listed = c.get("topics")
        names = (
            tuple(t for t in listed if isinstance(t, str) and t in topics)
            if isinstance(listed, list)
            else ()
        )
        filters = tuple(topics[t].subject for t in names)
        retention = stream_values["retention"]
        stream_replicas = stream_values["replicas"] or 1
        md, backoff = v["max_deliver"], v["backoff"]
        if backoff and isinstance(md, int) and md != -1 and len(backoff) > md:
            self.err(
                self._where(cs.get("backoff"), cpath),
                f"backoff has {len(backoff)} delays but max_deliver is {md}: a message is "
                f"delivered at most {md} times, so at most {md} delays apply (server error 10116)",
            )
        if backoff:
            # The server replaces ack_wait with backoff[0]; say so rather than drift forever.
            aw = cs.get("ack_wait")
            own = aw is not None and aw.path is not None and "consumers" in aw.path
            if own and isinstance(v["ack_wait"], int) and v["ack_wait"] != backoff[0]:
                assert aw is not None and aw.path is not None
                self.err(
                    aw.path,
                    f"ack_wait {format_duration(v['ack_wait'])} has no effect with a backoff: the "
                    f"server uses backoff[0] ({format_duration(backoff[0])}) as the ack wait; "
                    "drop ack_wait or make it equal to the first backoff delay",
                )
            v["ack_wait"] = backoff[0]
        if retention == "workqueue":
            if v["ack_policy"] != "explicit":
                self.err(
                    self._where(cs.get("ack_policy"), cpath),
                    f"consumer `{cname}` of work-queue stream `{sname}` must be ack_policy: explicit, "
                    f"not {v['ack_policy']} (server error 10098)",
                )
            if v["deliver_policy"] != "all":
                self.err(
                    self._where(cs.get("deliver_policy"), cpath),
                    f"consumer `{cname}` of work-queue stream `{sname}` must be deliver_policy: all, "
                    f"not {v['deliver_policy']} (server error 10101)",
                )
        rep = v["replicas"]
        if isinstance(rep, int):
            if rep > stream_replicas:
                self.err(
                    self._where(cs.get("replicas"), cpath),
                    f"consumer replicas {rep} exceed stream `{sname}` replicas {stream_replicas} (server error 10126)",
                )
            elif retention in ("workqueue", "interest") and rep != stream_replicas:
                self.err(
                    self._where(cs.get("replicas"), cpath),
                    f"on a {retention} stream consumer replicas must equal the stream's "
                    f"({stream_replicas}), got {rep} (server error 10134)",
                )
        expires = v["max_request_expires"]
        if isinstance(expires, int) and 0 < expires < MS:
            self.err(
                self._where(cs.get("max_request_expires"), cpath),
                f"max_request_expires {format_duration(expires)} is below the server's minimum "
                "of 1ms (server error 10115)",
            )
        if v["deliver_policy"] == "by_start_sequence" and cs.get("opt_start_seq") is None:
            self.err(
                self._where(cs.get("deliver_policy"), cpath),
                "deliver_policy by_start_sequence needs opt_start_seq",
            )
        if v["opt_start_seq"] is not None and v["deliver_policy"] != "by_start_sequence":
            self.err(
                self._where(cs.get("opt_start_seq"), cpath),
                "opt_start_seq is only used with deliver_policy: by_start_sequence",
            )
        if v["deliver_policy"] == "last_per_subject" and not isinstance(listed, list):
            # Without `topics` the consumer has no filter subject, which the server refuses.
            self.err(
                self._where(cs.get("deliver_policy"), cpath),
                "deliver_policy last_per_subject needs topics (a filter) (server error 10094)",
            )
        svc = str(c["service"]) if isinstance(c.get("service"), str) else ""
        line, col = self.locs.of_key(cpath)
        kwargs = {k: v[k] for k in CONSUMER_FIELD_TO_API}
        for k in ("ack_policy", "deliver_policy"):
            if kwargs[k] is None:
                kwargs[k] = BUILTIN_CONSUMER[k]
        return Consumer(
            name=cname,
            stream=sname,
            service=svc,
            topics=names,
            filter_subjects=filters,
            metadata=v["metadata"] or (),
            fetch_batch=v["fetch_batch"] or DEFAULT_FETCH_BATCH,
            concurrency=v["concurrency"] or DEFAULT_CONCURRENCY,
            location=Location(self.locs.file, line, col),
            **kwargs,
        )

    def _check_workqueue(self, sname: str, consumers: list[Consumer], subjects: list[str]) -> None:
        index: SubjectIndex[str] = SubjectIndex()
        for c in consumers:
            cpath: KeyPath = ("streams", sname, "consumers", c.name)
            listed = self.mapping("streams", sname, "consumers", c.name).get("topics")
            if listed and not c.filter_subjects:
                continue  # it lists only topics that are not the stream's: reported already
            filters = c.filter_subjects or tuple(subjects)
            reported: set[str] = set()
            for f in filters:
                for _, other in index.overlapping(f):
                    if other in reported:
                        continue
                    reported.add(other)
                    what = "takes every subject" if not c.filter_subjects else f"takes `{f}`"
                    self.err(
                        (*cpath, "topics") if c.filter_subjects else cpath,
                        f"consumers `{other}` and `{c.name}` of work-queue stream `{sname}` overlap "
                        f"(`{c.name}` {what}): on a work-queue stream each subject has one "
                        "consumer (server error 10100); use an interest or limits stream to fan out",
                        at_key=not c.filter_subjects,
                    )
            for f in filters:
                index.add(f, c.name)


# Values shown in messages are cut short: a whole mapping given where a string belongs
# would otherwise print itself into one error line.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 4
_REPR.maxlevel = 2


def _short(value: object) -> str:
    return _REPR.repr(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_INT64_MAX = 2**63 - 1


def _int64(n: int, written: object, *, duration: bool = False) -> int:
    """`n`, when the server's 64-bit fields can hold it (it refuses the JSON otherwise)."""
    if n <= _INT64_MAX:
        return n
    if duration:
        raise UnitError(f"{written!r} is too long: the server takes at most 2**63-1 ns (292 years)")
    raise UnitError(f"{written!r} is too large: the server takes at most 2**63-1")


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"
