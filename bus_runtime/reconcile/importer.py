"""`natstopo import`: write a topology file for the streams and consumers a server already has.

Adopting an existing system: the file loads, validates, and its plan against the same
server is empty (or only adopts unmarked assets). How the server's names map to the format:

- subject_prefix: the subjects' longest common leading tokens (at least one token left
  for each topic); topic names are the subjects without it (`orders.created` in a stream
  of `orders.created` and `orders.paid`... gives prefix `orders`, topic `created`).
- dead letters: a stream whose subjects are `<prefix>.<OTHER_STREAM>.>` is that stream's
  `dead_letter`, the way the loader derives it.
- services: a consumer's `natstopo.service` mark when natstopo created it, else
  `svc-<consumer name>` (lower-case, dashes); each is declared under `services`.
- settings: only values that differ from the server's defaults are written, in units.

What the format cannot express is left out with a comment saying why: mirrors and
sourced streams, `>` subjects that are not dead letters, push or ephemeral consumers,
consumer filters that are not one of the stream's topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from .._errors import ReconcileError
from ..jetstream.api import JetStreamApi
from ..jetstream.rules import CONSUMER_DEFAULTS, STREAM_DEFAULTS
from ..topology.checks.base import BUILTIN_CONSUMER, BUILTIN_STREAM
from ..topology.loader import parse_topology
from ..topology.model import (
    CONSUMER_FIELD_TO_API,
    DURATION_FIELDS,
    SIZE_FIELDS,
    STREAM_FIELD_TO_API,
)
from ..topology.units import MINUTE, format_duration, format_size
from .marks import MARK_SERVICE, MARK_TOPOLOGY, user_metadata

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _not_written(fld: str, kind: str) -> Any:
    """The value a topology gets when it does not write `fld`: natstopo's built-in default,
    else the server's own."""
    if kind == "stream":
        builtin, api, server = BUILTIN_STREAM, STREAM_FIELD_TO_API, STREAM_DEFAULTS
    else:
        builtin, api, server = BUILTIN_CONSUMER, CONSUMER_FIELD_TO_API, CONSUMER_DEFAULTS
    return builtin[fld] if fld in builtin else server.get(api[fld])


@dataclass
class ImportedTopology:
    """The topology file's text and what could not be expressed in it.

    Attributes:
        text: The YAML text (valid: it loads with `load_topology`).
        name: The topology's name.
        streams: Count of streams written.
        consumers: Count of consumers written.
        skipped: One line per stream or consumer left out, with the reason.
    """

    text: str
    name: str
    streams: int = 0
    consumers: int = 0
    skipped: list[str] = field(default_factory=list)


def service_name(consumer: str) -> str:
    """`svc-<consumer>` lower-cased, with anything but letters and digits as dashes."""
    base = re.sub(r"[^a-z0-9]+", "-", consumer.lower()).strip("-") or "consumer"
    return ("svc-" + base)[:63].rstrip("-")


def _topology_name(value: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:63].strip("-")
    return name if _NAME_RE.match(name) else "imported"


def _common_prefix(subjects: list[str]) -> list[str]:
    split = [s.split(".") for s in subjects]
    limit = min(len(t) for t in split) - 1
    prefix: list[str] = []
    for i in range(limit):
        tok = split[0][i]
        if tok in ("*", ">") or any(t[i] != tok for t in split):
            break
        prefix.append(tok)
    return prefix


def _value(fld: str, value: Any) -> Any:
    if fld == "backoff":
        return [format_duration(int(v)) for v in value]
    if fld in DURATION_FIELDS and isinstance(value, int):
        return format_duration(value)
    if fld in SIZE_FIELDS and isinstance(value, int) and value >= 0:
        return format_size(value)
    return value


def _stream_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fld, key in STREAM_FIELD_TO_API.items():
        if key not in cfg:
            continue
        value = cfg[key]
        if fld == "max_msgs_per_subject" and value == 0:
            continue
        if fld == "duplicate_window":
            max_age = int(cfg.get("max_age") or 0)
            default = min(2 * MINUTE, max_age) if max_age else 2 * MINUTE
            if value in (0, default):
                continue
        elif value == _not_written(fld, "stream") or value in (None, ""):
            continue
        out[fld] = _value(fld, value)
    md = user_metadata(cfg.get("metadata"))
    if md:
        out["metadata"] = md
    return out


def _consumer_settings(cfg: dict[str, Any], stream_replicas: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    backoff = cfg.get("backoff") or []
    for fld, key in CONSUMER_FIELD_TO_API.items():
        value = cfg.get(key)
        if value is None or (fld == "backoff" and not value):
            continue
        if fld == "ack_wait" and backoff:
            continue  # the server sets it to backoff[0], and so does the loader
        if fld == "replicas" and value == stream_replicas:
            continue
        if value == _not_written(fld, "consumer") or (fld == "description" and not value):
            continue
        out[fld] = _value(fld, value)
    if "max_deliver" not in out and cfg.get("max_deliver", -1) != BUILTIN_CONSUMER["max_deliver"]:
        out["max_deliver"] = cfg.get("max_deliver", -1)
    md = user_metadata(cfg.get("metadata"))
    if md:
        out["metadata"] = md
    return out


def _unclash(layout: dict[str, tuple[str, list[str], list[str]]]) -> None:
    """Make topic names unique across streams by moving prefix tokens into them.

    Streams S0 (`p0.s0.t0.created`) and S1 (`p1.s1.t0.created`) both give topic
    `t0.created` under prefixes `p0.s0` and `p1.s1`; one token less in each prefix gives
    `s0.t0.created` and `s1.t0.created`. A prefix keeps at least one token; whatever
    still clashes is left out by the caller.
    """
    while True:
        owners: dict[str, set[str]] = {}
        for sname, (_, topics, _) in layout.items():
            for t in topics:
                owners.setdefault(t, set()).add(sname)
        clashing = {s for names in owners.values() if len(names) > 1 for s in names}
        moved = False
        for sname in clashing:
            prefix, topics, origins = layout[sname]
            toks = prefix.split(".")
            if origins or len(toks) < 2:
                continue  # a dead-letter prefix is fixed by its derived subjects
            layout[sname] = (".".join(toks[:-1]), [f"{toks[-1]}.{t}" for t in topics], origins)
            moved = True
        if not moved:
            return


async def import_topology(
    js_or_nc: Client | JetStreamContext | JetStreamApi,
    *,
    name: str | None = None,
    source: str = "",
) -> ImportedTopology:
    """Read every stream and consumer of the server and write them as a topology file.

    Args:
        js_or_nc: A connection or JetStream context.
        name: The topology's name; default: the `natstopo.topology` mark the streams
            share, else `imported`.
        source: Where the server is (URL), for the file's header comment.

    Raises:
        ReconcileError: The server could not be read, or (a bug) the written file would
            not validate.
    """
    api = JetStreamApi.of(js_or_nc)
    infos = sorted(await api.list_streams(), key=lambda i: str(i["config"]["name"]))
    configs = {str(i["config"]["name"]): i["config"] for i in infos}
    skipped: list[str] = []
    marks = ((c.get("metadata") or {}).get(MARK_TOPOLOGY) for c in configs.values())
    owners: set[str] = {m for m in marks if isinstance(m, str)}
    topo_name = _topology_name(name or (owners.pop() if len(owners) == 1 else "imported"))

    # -- subjects: dead letters, prefixes and topic names
    layout: dict[str, tuple[str, list[str], list[str]]] = {}  # name -> (prefix, topics, dl origins)
    for sname, cfg in configs.items():
        if cfg.get("mirror") or cfg.get("sources"):
            skipped.append(f"stream {sname}: a mirror or sourced stream cannot be declared")
            continue
        subjects = list(cfg.get("subjects") or [])
        if not subjects:
            skipped.append(f"stream {sname}: has no subjects")
            continue
        dl: dict[str, str] = {}
        plain: list[str] = []
        for subj in subjects:
            toks = subj.split(".")
            if len(toks) >= 3 and toks[-1] == ">" and toks[-2] in configs and toks[-2] != sname:
                dl[toks[-2]] = ".".join(toks[:-2])
            else:
                plain.append(subj)
        bad = [s for s in plain if ">" in s.split(".")]
        if bad:
            skipped.append(f"stream {sname}: subject `{bad[0]}` has no topic form (`>`)")
            continue
        if dl:
            prefixes = set(dl.values())
            prefix = prefixes.pop()
            if prefixes or any(not s.startswith(prefix + ".") for s in plain):
                skipped.append(f"stream {sname}: dead-letter subjects and topics share no prefix")
                continue
        else:
            toks = _common_prefix(plain)
            if not toks:
                skipped.append(
                    f"stream {sname}: subjects share no first token to use as subject_prefix"
                )
                continue
            prefix = ".".join(toks)
        topics = [s[len(prefix) + 1 :] for s in plain]
        layout[sname] = (prefix, topics, sorted(dl))
    # A dead-letter stream whose origin was left out cannot derive that subject.
    for sname, (_, _, origins) in list(layout.items()):
        lost = [o for o in origins if o not in layout]
        if lost:
            skipped.append(
                f"stream {sname}: receives dead letters of {lost[0]}, which was left out"
            )
            del layout[sname]
    _unclash(layout)
    seen: dict[str, str] = {}
    for sname, (_, topics, _) in list(layout.items()):
        clash = next((t for t in topics if t in seen), None)
        if clash is not None:
            skipped.append(
                f"stream {sname}: topic `{clash}` is also a topic of stream {seen[clash]} "
                "(topic names are unique in a topology)"
            )
            del layout[sname]
            continue
        seen.update(dict.fromkeys(topics, sname))
    dead_letter_of: dict[str, str] = {}
    for sname, (_, _, origins) in layout.items():
        for o in origins:
            dead_letter_of.setdefault(o, sname)

    # -- the document
    consumer_lists = await api.consumers_of(list(layout))
    services: dict[str, dict[str, Any]] = {}
    streams_doc: dict[str, Any] = {}
    n_consumers = 0
    for sname, (prefix, topics, _) in layout.items():
        cfg = configs[sname]
        doc: dict[str, Any] = {}
        settings = _stream_settings(cfg)
        if "description" in settings:
            doc["description"] = settings.pop("description")
        if prefix != sname:
            doc["subject_prefix"] = prefix
        doc.update(settings)
        if sname in dead_letter_of:
            doc["dead_letter"] = dead_letter_of[sname]
        if topics:
            doc["topics"] = {t: {} for t in topics}
        by_subject = {f"{prefix}.{t}": t for t in topics}
        replicas = int(cfg.get("num_replicas") or 1)
        consumers: dict[str, Any] = {}
        for ci in sorted(consumer_lists[sname], key=lambda i: str(i["name"])):
            ccfg = ci.get("config", {})
            cname = str(ci["name"])
            if not ccfg.get("durable_name"):
                skipped.append(f"consumer {sname}/{cname}: ephemeral")
                continue
            if ccfg.get("deliver_subject"):
                skipped.append(
                    f"consumer {sname}/{cname}: a push consumer (natstopo declares pull)"
                )
                continue
            filters = list(ccfg.get("filter_subjects") or [])
            if ccfg.get("filter_subject"):
                filters = [ccfg["filter_subject"]]
            unknown = [f for f in filters if f not in by_subject]
            if unknown:
                skipped.append(
                    f"consumer {sname}/{cname}: filter `{unknown[0]}` is not one of the stream's topics"
                )
                continue
            md = ccfg.get("metadata") or {}
            svc = md.get(MARK_SERVICE)
            if not (isinstance(svc, str) and _NAME_RE.match(svc)):
                svc = service_name(cname)
            services.setdefault(svc, {})
            cdoc: dict[str, Any] = {"service": svc}
            csettings = _consumer_settings(ccfg, replicas)
            if "description" in csettings:
                cdoc["description"] = csettings.pop("description")
            if filters:
                cdoc["topics"] = [by_subject[f] for f in filters]
            cdoc.update(csettings)
            consumers[cname] = cdoc
            n_consumers += 1
        if consumers:
            doc["consumers"] = consumers
        streams_doc[sname] = doc
    document: dict[str, Any] = {"version": 1, "name": topo_name}
    if services:
        document["services"] = dict(sorted(services.items()))
    document["streams"] = streams_doc
    server = ".".join(map(str, api.server_version))
    header = [
        f"# Imported by `natstopo import` from nats-server {server}"
        + (f" at {source}" if source else "")
        + ".",
        "# Topic names are subjects without the stream's subject_prefix; services of",
        "# consumers that natstopo did not create are named svc-<consumer>.",
    ]
    header += [f"# left out: {s}" for s in skipped]
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    text = "\n".join(header) + "\n" + body
    _, errors = parse_topology(text, "<imported>")
    if errors:
        raise ReconcileError(
            "the imported topology does not validate (a natstopo bug, please report it):\n"
            + "\n".join(str(e) for e in errors[:10])
        )
    return ImportedTopology(text, topo_name, len(streams_doc), n_consumers, skipped)
