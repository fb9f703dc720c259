"""What the semantic checks share: the checker's state, layering of settings, helpers.

Layering of settings, lowest first: natstopo's built-in defaults, `defaults`, the
environment's `defaults`, the stream's (or consumer's) own fields, the environment's
`streams.<NAME>` overrides.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from ..._errors import TopologyError
from ..model import (
    CONSUMER_FIELD_TO_API,
    DEFAULT_CONCURRENCY,
    DEFAULT_FETCH_BATCH,
    DEFAULT_HANDLER_TIMEOUT,
    DURATION_FIELDS,
    SIZE_FIELDS,
    STREAM_FIELD_TO_API,
    Consumer,
    Location,
)
from ..units import SECOND, UnitError, parse_duration, parse_size
from ..yaml_source import Locations
from ..yaml_source import Path as KeyPath

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
    "handler_timeout": DEFAULT_HANDLER_TIMEOUT,
}
STREAM_SETTINGS = (*STREAM_FIELD_TO_API, "metadata", "dead_letter", "subject_prefix")
CONSUMER_SETTINGS = (
    *CONSUMER_FIELD_TO_API,
    "metadata",
    "fetch_batch",
    "concurrency",
    "handler_timeout",
)

_STREAM_ORDER = {k: i for i, k in enumerate(STREAM_SETTINGS)}
_CONSUMER_ORDER = {k: i for i, k in enumerate(CONSUMER_SETTINGS)}

NAME_KINDS: dict[KeyPath, str] = {
    ("streams",): "stream name",
    ("services",): "service name",
    ("environments",): "environment name",
}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def is_str_map(value: object) -> bool:
    return isinstance(value, dict)


@dataclass
class Setting:
    """An effective value and the key path that set it (None: a built-in default)."""

    value: Any
    path: KeyPath | None


@dataclass
class CheckerBase:
    """The state every check shares: the document, its places, the errors found."""

    data: dict[str, Any]
    locs: Locations
    base_dir: Path
    errors: list[TopologyError] = field(default_factory=list)
    warnings: list[TopologyError] = field(default_factory=list)
    # Key paths whose value the schema already refused: not parsed again.
    bad_paths: set[KeyPath] = field(default_factory=set)
    _schemas: dict[str, tuple[Mapping[str, Any] | None, str | None]] = field(default_factory=dict)
    # What does not depend on the environment, kept from the first build that made it:
    # a stream's topics by (stream, subject prefix), and the subject layouts whose
    # overlap was already checked (environments only change settings, rarely subjects).
    _topics_built: dict[tuple[str, str], tuple[list[Any], list[Any]]] = field(default_factory=dict)
    _layouts_checked: set[tuple[Any, ...]] = field(default_factory=set)
    # The Location of each setting's value, by key path (`_locations`).
    _value_locations: dict[KeyPath, Location] = field(default_factory=dict)
    # The document's mapping at each layer's path (the document does not change).
    _layer_mappings: dict[KeyPath, dict[str, Any]] = field(default_factory=dict)
    # The built-in values merged with the `defaults` layers, per (environment, kind).
    _shared_layers: dict[tuple[str | None, str], dict[str, Setting]] = field(default_factory=dict)
    # Consumers by their inputs (see `_build_consumer`), with the errors and warnings
    # their build reported.
    _consumers_built: dict[
        tuple[Any, ...], tuple[Consumer | None, list[TopologyError], list[TopologyError]]
    ] = field(default_factory=dict)

    # -- helpers ---------------------------------------------------------------------
    def err(self, path: KeyPath, message: str, *, at_key: bool = False) -> None:
        self.errors.append(self.locs.error(path, message, at_key=at_key))

    def warn(self, path: KeyPath, message: str, *, at_key: bool = False) -> None:
        self.warnings.append(self.locs.error(path, message, at_key=at_key, severity="warning"))

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

    # -- 3. effective settings for one environment, and the checks on them -----------
    def _layer(
        self, env: str | None, kind: str, own: KeyPath, env_own: KeyPath | None
    ) -> dict[str, Setting]:
        # The built-in values and the two `defaults` layers are the same for every stream
        # (consumer) of an environment: merged once, copied per call (a Setting is never
        # changed once made).
        shared = self._shared_layers.get((env, kind))
        if shared is None:
            builtin = BUILTIN_STREAM if kind == "stream" else BUILTIN_CONSUMER
            shared = {k: Setting(v, None) for k, v in builtin.items()}
            defaults: list[KeyPath] = [("defaults", kind)]
            if env is not None:
                defaults.append(("environments", env, "defaults", kind))
            self._apply_layers(shared, kind, defaults)
            self._shared_layers[(env, kind)] = shared
        out = dict(shared)
        layers: list[KeyPath] = [own]
        if env is not None and env_own is not None:
            layers.append(env_own)
        self._apply_layers(out, kind, layers)
        return out

    def _apply_layers(self, out: dict[str, Setting], kind: str, layers: list[KeyPath]) -> None:
        order = _STREAM_ORDER if kind == "stream" else _CONSUMER_ORDER
        for layer in layers:
            mapping = self._layer_mappings.get(layer)
            if mapping is None:
                mapping = self._layer_mappings[layer] = self.mapping(*(str(p) for p in layer))
            if not mapping:
                continue
            # The layer's own keys that are settings, in the settings' order (a layer sets
            # a few of the forty settings: asking for each of them costs more).
            for k in sorted(mapping.keys() & order.keys(), key=order.__getitem__):
                out[k] = Setting(mapping[k], (*layer, k))

    def _values(self, s: dict[str, Setting], names: tuple[str, ...]) -> dict[str, Any]:
        """Every setting of `names`, parsed (None when unset): only the set ones are parsed."""
        out: dict[str, Any] = dict.fromkeys(names)
        for k in s:
            if k in out:
                out[k] = self._value(s, k)
        return out

    def _value(self, s: dict[str, Setting], key: str) -> Any:
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
                return int64(parse_duration(v), v, duration=True)
            if key in SIZE_FIELDS:
                return int64(parse_size(v), v)
            if isinstance(v, int) and not isinstance(v, bool):
                return int64(v, v)
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
                out.append(int64(parse_duration(item), item, duration=True))
            except UnitError as exc:
                if path is not None and (*path, i) not in self.bad_paths:
                    self.bad_paths.add((*path, i))
                    self.err((*path, i), str(exc))
        return out if len(out) == len(items) else None

    def _locations(self, settings: dict[str, Setting]) -> dict[str, Location]:
        """Where each setting was written (for errors found later, e.g. by a plan)."""
        out: dict[str, Location] = {}
        known = self._value_locations
        for key, setting in settings.items():
            path = setting.path
            if path is not None:
                # One Location per path (they are immutable): a `defaults` setting is at the
                # same place for every stream or consumer that takes it.
                loc = known.get(path)
                if loc is None:
                    line, col = self.locs.of_value(path)
                    loc = known[path] = Location(self.locs.file, line, col)
                out[key] = loc
        return out

    def _where(self, setting: Setting | None, fallback: KeyPath) -> KeyPath:
        return setting.path if setting is not None and setting.path is not None else fallback


# Values shown in messages are cut short: a whole mapping given where a string belongs
# would otherwise print itself into one error line.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 4
_REPR.maxlevel = 2


def short(value: object) -> str:
    return _REPR.repr(value)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_INT64_MAX = 2**63 - 1


def int64(n: int, written: object, *, duration: bool = False) -> int:
    """`n`, when the server's 64-bit fields can hold it (it refuses the JSON otherwise)."""
    if n <= _INT64_MAX:
        return n
    if duration:
        raise UnitError(f"{written!r} is too long: the server takes at most 2**63-1 ns (292 years)")
    raise UnitError(f"{written!r} is too large: the server takes at most 2**63-1")


def article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"
