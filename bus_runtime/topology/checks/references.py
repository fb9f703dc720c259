"""Check 2: references that do not depend on the environment: services, topics, consumers'
topics, environment overrides of declared assets, byte lengths, payload schema files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from ..yaml_source import Path as KeyPath
from .base import (
    CheckerBase,
    did_you_mean,
)

# jsonschema and referencing are imported where a payload schema is checked: a topology
# without payload schemas (and `natstopo validate` of it) does not pay for their import.

# Keywords whose values are data, not subschemas: a `$ref` key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})


def unresolvable_refs(schema: Mapping[str, Any]) -> list[str]:
    """The `$ref`s of a JSON Schema that do not resolve inside the schema itself.

    natstopo resolves a payload schema's references within its own document only
    (`#/$defs/...`, `#`, embedded `$id`s): it never reads other files or the network when
    checking a payload, so a reference to a sibling file or a URL would fail every
    publish of the topic. Each problem is one line naming the reference.
    """
    import referencing.exceptions
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    try:
        resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    except referencing.exceptions.CannotDetermineSpecification:
        return []  # an unknown `$schema`: check_schema reports it
    own = schema.get("$id")
    root = own if isinstance(own, str) else ""
    registry: Registry[Any] = Registry().with_resource(root, resource).crawl()
    problems: list[str] = []

    def walk(node: Any, base: str) -> None:
        if isinstance(node, dict):
            own_id = node.get("$id")
            if isinstance(own_id, str) and node is not schema:
                base = urljoin(base, own_id)
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    registry.resolver(base).lookup(ref)
                except referencing.exceptions.Unresolvable as exc:
                    why = (
                        "points to nothing inside the schema"
                        if isinstance(exc, referencing.exceptions.PointerToNowhere)
                        else "points outside the schema (another file or a URL)"
                    )
                    problems.append(f"`$ref` {ref!r} {why}")
            for key, value in node.items():
                if key not in _DATA_KEYWORDS:
                    walk(value, base)
        elif isinstance(node, list):
            for item in node:
                walk(item, base)

    walk(schema, root)
    return problems


class ReferenceChecks(CheckerBase):
    """Names that must point at something declared."""

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
                                + did_you_mean(svc, services),
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
                        + did_you_mean(svc, services),
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
                                + did_you_mean(tname, own_topics),
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
                        + did_you_mean(sname, streams),
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
                                f"`{sname}` does not declare" + did_you_mean(cname, declared),
                                at_key=True,
                            )

    def _check_byte_lengths(self, streams: dict[str, dict[str, Any]]) -> None:
        """The server measures names and descriptions in UTF-8 bytes; the schema, in characters."""

        def check(path: KeyPath, text: object, limit: int, what: str, at_key: bool) -> None:
            # surrogatepass: PyYAML without libyaml reads "\ud800" as a lone surrogate
            # (libyaml refuses it), which strict UTF-8 cannot encode.
            encoded = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else b""
            if isinstance(text, str) and len(text) <= limit < len(encoded):
                size = len(encoded)
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
        import jsonschema
        from jsonschema.validators import validator_for

        try:
            cls = validator_for(schema, default=jsonschema.Draft202012Validator)
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            self.err(
                path, f"payload schema `{rel}` is not a valid JSON Schema at {where}: {exc.message}"
            )
            return self._schemas[rel]
        except RecursionError:
            self.err(
                path,
                f"payload schema `{rel}` is nested too deeply to check (keep it under about "
                "50 levels of properties and items)",
            )
            return self._schemas[rel]
        try:
            refs = unresolvable_refs(schema)
        except RecursionError:
            refs = []  # deeper than this walk goes; the bus refuses it at first use
        if refs:
            self.err(
                path,
                f"payload schema `{rel}`: {'; '.join(refs[:3])}"
                + (f" (and {len(refs) - 3} more)" if len(refs) > 3 else "")
                + ": natstopo resolves references only inside the payload schema; move the "
                "definition into its `$defs` and refer to it as `#/$defs/NAME`",
            )
            return self._schemas[rel]
        digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]
        result: tuple[Mapping[str, Any] | None, str | None] = (schema, digest)
        self._schemas[rel] = result
        return result
