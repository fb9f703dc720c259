"""Property tests of the validator: whatever the file holds, errors come back, never a crash.

Valid topologies (the shipped one, and small generated ones) are mutated the ways a
hurried edit or a bad merge does: a line deleted, duplicated or moved, a key renamed, a
value of the wrong type, garbage inserted, the text cut short, indentation changed, random
characters. The validator must return errors (or raise `TopologyValidationError` from
`load_topology`), never anything else, and every error must name a line of the file.
The fast schema pre-check must never accept a document that jsonschema refuses.
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus_runtime._errors import TopologyError, TopologyValidationError
from bus_runtime.topology.json_schema_compiler import compile_check
from bus_runtime.topology.loader import load_topology, parse_topology, topology_schema

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "topology" / "topology.yaml"
SHIPPED_TEXT = SHIPPED.read_text(encoding="utf-8")
SHIPPED_DATA = yaml.safe_load(SHIPPED_TEXT)
# PyYAML's safe loader, in C when available (the same results, faster).
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ENVIRONMENTS = [None, "dev", "prod", "local", "nope"]

SCHEMA = topology_schema()
FAST_CHECK = compile_check(SCHEMA)
JSONSCHEMA = jsonschema.Draft202012Validator(SCHEMA)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Loading the shipped topology checks its 13 payload schemas with jsonschema: fewer runs.
SHIPPED_PROPERTY = settings(PROPERTY, max_examples=40)


# -- small generated topologies ------------------------------------------------------------


@st.composite
def topologies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid topology by construction: distinct prefixes, topics, one service per consumer."""
    n_streams = draw(st.integers(min_value=1, max_value=3))
    with_dlq = draw(st.booleans())
    services: dict[str, Any] = {"svc-pub": {"description": "publishes"}}
    streams: dict[str, Any] = {}
    topic_no = 0
    consumer_no = 0
    for s in range(n_streams):
        retention = draw(st.sampled_from(["limits", "interest", "workqueue"]))
        stream: dict[str, Any] = {"subject_prefix": f"p{s}", "retention": retention}
        if draw(st.booleans()):
            stream["replicas"] = draw(st.integers(min_value=1, max_value=5))
        if draw(st.booleans()):
            stream["max_age"] = draw(st.sampled_from(["1h", "7d", "30d", 0]))
        if draw(st.booleans()):
            stream["max_bytes"] = draw(st.sampled_from(["512MiB", "1GB", 1048576, -1]))
        if with_dlq:
            stream["dead_letter"] = "DLQ"
        topics: dict[str, Any] = {}
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            name = draw(st.sampled_from(["a", "b.c", "x.*.y", "order.created"]))
            topics[f"t{topic_no}.{name}"] = {"publishers": ["svc-pub"]}
            topic_no += 1
        stream["topics"] = topics
        consumers: dict[str, Any] = {}
        names = list(topics)
        # On a work queue each topic has at most one consumer; elsewhere any subset.
        chunks = (
            [[t] for t in names]
            if retention == "workqueue"
            else [draw(st.lists(st.sampled_from(names), min_size=1, unique=True)) for _ in names]
        )
        for chunk in chunks[: draw(st.integers(min_value=0, max_value=len(chunks)))]:
            service = f"svc-c{consumer_no}"
            services[service] = {}
            consumer: dict[str, Any] = {"service": service, "topics": chunk}
            max_deliver = draw(st.integers(min_value=1, max_value=6))
            consumer["max_deliver"] = max_deliver
            if draw(st.booleans()):
                delays = ["1s", "10s", "1m", "5m", "1h", "2h"][: draw(st.integers(1, max_deliver))]
                consumer["backoff"] = delays
            elif draw(st.booleans()):
                consumer["ack_wait"] = draw(st.sampled_from(["30s", "2m", 5000000000]))
            consumers[f"c{consumer_no}"] = consumer
            consumer_no += 1
        if consumers:
            stream["consumers"] = consumers
        streams[f"S{s}"] = stream
    if with_dlq:
        streams["DLQ"] = {"subject_prefix": "dlq", "retention": "limits", "max_age": "30d"}
    doc: dict[str, Any] = {
        "version": 1,
        "name": "generated",
        "defaults": {
            "stream": {"storage": "file", "duplicate_window": "2m"},
            "consumer": {"ack_policy": "explicit"},
        },
        "services": services,
        "streams": streams,
    }
    if draw(st.booleans()):
        doc["environments"] = {
            "dev": {"defaults": {"stream": {"replicas": 1, "max_age": "1d"}}},
            "prod": {"streams": {"S0": {"max_bytes": "10GiB"}}},
        }
    return doc


def dump(doc: dict[str, Any], flow: bool) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None if flow else False)


generated_texts = st.builds(dump, topologies(), st.booleans())


# -- mutations ------------------------------------------------------------------------------

Mutation = Callable[[str, st.DrawFn], str]

garbage = st.sampled_from(
    [
        "",
        ":",
        "- ",
        "?",
        "&a",
        "*a",
        "*nope",
        "!!binary",
        "!!timestamp x",
        "!!python/object:os.system",
        "<<: *a",
        "{",
        "]",
        "'",
        '"',
        "#",
        "---",
        "...",
        "%YAML 1.2",
        "\t",
        "key: value",
        "replicas: 7",
        "retention: workque",
        "max_age: 10ms",
        "topics: [a, b]",
        "service: svc-nope",
        "dead_letter: TAX_AGENT_EVENTS",
        "yes: no",
        "1: 2",
        "null: ~",
        "? [a, b]\n: c",
        "streams: {}",
        "\ufeff",
        "\x00",
        "\x85",
        "\u2028",
        "\r",
        "é",
    ]
) | st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
    max_size=12,
)
values = st.one_of(
    st.sampled_from(
        [
            "0",
            "-1",
            "1.5",
            "3.0",
            "1e3",
            "true",
            "no",
            "null",
            "~",
            "[]",
            "{}",
            "[1, 2]",
            "{a: 1}",
            "''",
            "7x",
            "10ms",
            "1k",
            "99999999999999999999999",
            "workque",
            "svc-nope",
            "TAX_AGENT_EVENTS",
            "NOWHERE",
            "schemas/missing.json",
            "../topology.yaml",
            "a.>",
            "'*'",
            "2001-12-14",
            "&x 1",
            "*x",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


def lines_of(text: str) -> list[str]:
    return text.split("\n")


def pick(draw: st.DrawFn, lines: list[str]) -> int:
    return draw(st.integers(min_value=0, max_value=max(len(lines) - 1, 0)))


def delete_line(text: str, draw: st.DrawFn) -> str:
    lines = lines_of(text)
    del lines[pick(draw, lines)]
    return "\n".join(lines)


def duplicate_line(text: str, draw: st.DrawFn) -> str:
    lines = lines_of(text)
    i = pick(draw, lines)
    lines.insert(i, lines[i])
    return "\n".join(lines)


def move_line(text: str, draw: st.DrawFn) -> str:
    lines = lines_of(text)
    line = lines.pop(pick(draw, lines))
    lines.insert(pick(draw, lines), line)
    return "\n".join(lines)


def insert_garbage_line(text: str, draw: st.DrawFn) -> str:
    lines = lines_of(text)
    indent = " " * draw(st.integers(min_value=0, max_value=10))
    lines.insert(pick(draw, lines), indent + draw(garbage))
    return "\n".join(lines)


def insert_garbage(text: str, draw: st.DrawFn) -> str:
    at = draw(st.integers(min_value=0, max_value=len(text)))
    return text[:at] + draw(garbage) + text[at:]


def truncate(text: str, draw: st.DrawFn) -> str:
    return text[: draw(st.integers(min_value=0, max_value=len(text)))]


def reindent(text: str, draw: st.DrawFn) -> str:
    lines = lines_of(text)
    i = pick(draw, lines)
    body = lines[i].lstrip(" ")
    lines[i] = draw(st.sampled_from(["", " ", "  ", "   ", "\t", "      ", "  \t"])) + body
    return "\n".join(lines)


def swap_indentation(text: str, draw: st.DrawFn) -> str:
    lines = lines_of(text)
    i, j = pick(draw, lines), pick(draw, lines)
    a, b = lines[i], lines[j]
    ia, ib = len(a) - len(a.lstrip(" ")), len(b) - len(b.lstrip(" "))
    lines[i], lines[j] = " " * ib + a.lstrip(" "), " " * ia + b.lstrip(" ")
    return "\n".join(lines)


_KEY = re.compile(r"^(\s*(?:- )?)([^\s:#][^:#]*?)(:(?:\s|$))")
_VALUE = re.compile(r"^(\s*(?:- )?[^\s:#][^:#]*?:\s+)(\S.*)$")


def rename_key(text: str, draw: st.DrawFn) -> str:
    lines = lines_of(text)
    candidates = [i for i, line in enumerate(lines) if _KEY.match(line)]
    if not candidates:
        return text
    i = draw(st.sampled_from(candidates))
    m = _KEY.match(lines[i])
    assert m is not None
    key = m.group(2)
    how = draw(st.sampled_from(["drop", "add", "upper", "other", "swap"]))
    if how == "drop" and len(key) > 1:
        j = draw(st.integers(min_value=0, max_value=len(key) - 1))
        key = key[:j] + key[j + 1 :]
    elif how == "add":
        key += draw(st.sampled_from(["s", "_", "x", " ", "."]))
    elif how == "upper":
        key = key.upper()
    elif how == "swap" and len(key) > 2:
        key = key[1] + key[0] + key[2:]
    else:
        key = draw(st.sampled_from(["streams", "topics", "consumers", "service", "max_age", "x"]))
    lines[i] = m.group(1) + key + lines[i][m.end(2) :]
    return "\n".join(lines)


def change_value(text: str, draw: st.DrawFn) -> str:
    lines = lines_of(text)
    candidates = [i for i, line in enumerate(lines) if _VALUE.match(line)]
    if not candidates:
        return text
    i = draw(st.sampled_from(candidates))
    m = _VALUE.match(lines[i])
    assert m is not None
    lines[i] = m.group(1) + draw(values)
    return "\n".join(lines)


def replace_chars(text: str, draw: st.DrawFn) -> str:
    if not text:
        return text
    at = draw(st.integers(min_value=0, max_value=len(text) - 1))
    n = draw(st.integers(min_value=1, max_value=4))
    return text[:at] + draw(garbage) + text[at + n :]


MUTATIONS: list[Mutation] = [
    delete_line,
    duplicate_line,
    move_line,
    insert_garbage_line,
    insert_garbage,
    truncate,
    reindent,
    swap_indentation,
    rename_key,
    change_value,
    change_value,
    rename_key,
    replace_chars,
]


def mutate(text: str, draw: st.DrawFn) -> str:
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        text = draw(st.sampled_from(MUTATIONS))(text, draw)
    return text


# -- the properties ---------------------------------------------------------------------------


def line_count(text: str) -> int:
    return max(len(text.splitlines()), 1)


def assert_errors_well_formed(text: str, errors: list[TopologyError]) -> None:
    n = line_count(text)
    for e in errors:
        assert isinstance(e, TopologyError)
        assert 1 <= e.line <= n, f"line {e.line} of a {n}-line file: {e}"
        assert e.column >= 1, str(e)
        assert isinstance(e.path, str)
        assert e.message
        assert "\n" not in e.message, "one error, one line"
        assert "Traceback" not in e.message
    assert errors == sorted(errors)
    assert len(set(errors)) == len(errors)


# JSON types of the JetStream API's config fields (the server's Go structs refuse others).
API_INTEGERS = {
    "num_replicas",
    "max_age",
    "max_bytes",
    "max_msgs",
    "max_msgs_per_subject",
    "max_msg_size",
    "max_consumers",
    "duplicate_window",
    "subject_delete_marker_ttl",
    "ack_wait",
    "max_deliver",
    "max_ack_pending",
    "opt_start_seq",
    "max_waiting",
    "max_batch",
    "max_expires",
}
API_BOOLEANS = {
    "discard_new_per_subject",
    "allow_rollup_hdrs",
    "deny_delete",
    "deny_purge",
    "allow_direct",
    "allow_msg_ttl",
    "allow_batched",
    "mem_storage",
    "headers_only",
}


def assert_api_types(config: dict[str, Any]) -> None:
    for key, value in config.items():
        if key in API_INTEGERS:
            assert type(value) is int, (key, value)
        elif key in API_BOOLEANS:
            assert type(value) is bool, (key, value)
        elif key == "backoff":
            assert all(type(v) is int for v in value), (key, value)
        elif key in ("subjects", "filter_subjects"):
            assert all(type(v) is str for v in value), (key, value)
        elif key == "metadata":
            assert all(type(k) is str and type(v) is str for k, v in value.items()), value
        else:
            assert type(value) is str, (key, value)


def check_text(text: str, base_dir: Path, environment: str | None) -> list[TopologyError]:
    topology, errors = parse_topology(
        text,
        "topology.yaml",
        base_dir=base_dir,
        environment=environment,
        all_environments=environment is None,
    )
    assert_errors_well_formed(text, errors)
    if errors:
        assert topology is None
    else:
        # A file that passes produces configs the server can decode.
        assert topology is not None
        for stream in topology.streams:
            assert_api_types(stream.to_stream_config())
            for consumer in stream.consumers:
                assert_api_types(consumer.to_consumer_config())
        assert topology.fingerprint
        for warning in topology.warnings:
            assert 1 <= warning.line <= line_count(text), str(warning)
    return errors


def check_schema_agreement(text: str) -> None:
    """The fast check never says yes where jsonschema says no."""
    try:
        doc = yaml.load(text, Loader=SAFE_LOADER)  # the safe loader
    except Exception:  # not YAML at all: nothing to compare
        return
    if FAST_CHECK(doc):
        assert JSONSCHEMA.is_valid(doc), list(JSONSCHEMA.iter_errors(doc))[:3]


@pytest.fixture(scope="module")
def scratch() -> Any:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def test_shipped_and_generated_are_valid_before_mutation() -> None:
    errors = check_text(SHIPPED_TEXT, SHIPPED.parent, None)
    assert errors == []
    assert FAST_CHECK(yaml.safe_load(SHIPPED_TEXT))


@settings(PROPERTY, max_examples=80)
@given(generated_texts)
def test_generated_topologies_are_valid(text: str) -> None:
    # No false alarms: what is valid by construction passes, in every environment.
    for env in (None, "dev", "prod") if "environments" in text else (None,):
        topology, errors = parse_topology(
            text, "topology.yaml", base_dir=REPO, environment=env, all_environments=env is None
        )
        assert errors == [], "\n".join(map(str, errors)) + "\n" + text
        assert topology is not None
    assert FAST_CHECK(yaml.safe_load(text))


@SHIPPED_PROPERTY
@given(st.data(), st.sampled_from(ENVIRONMENTS))
def test_mutated_shipped_topology_only_returns_errors(
    data: st.DataObject, environment: str | None
) -> None:
    text = mutate(SHIPPED_TEXT, data.draw)
    check_text(text, SHIPPED.parent, environment)


@PROPERTY
@given(generated_texts, st.data(), st.sampled_from(ENVIRONMENTS))
def test_mutated_generated_topology_only_returns_errors(
    text: str, data: st.DataObject, environment: str | None
) -> None:
    text = mutate(text, data.draw)
    check_text(text, REPO, environment)
    check_schema_agreement(text)


@settings(PROPERTY, max_examples=60)
@given(st.data())
def test_fast_schema_check_never_accepts_what_jsonschema_refuses(data: st.DataObject) -> None:
    check_schema_agreement(mutate(SHIPPED_TEXT, data.draw))


@PROPERTY
@given(st.binary(max_size=300))
def test_random_bytes_only_return_errors(raw: bytes) -> None:
    text = raw.decode("utf-8", errors="replace")
    check_text(text, REPO, None)


@settings(PROPERTY, max_examples=30, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_load_topology_raises_only_validation_error(data: st.DataObject, scratch: Path) -> None:
    source = data.draw(st.sampled_from(["shipped", "generated"]))
    text = SHIPPED_TEXT if source == "shipped" else data.draw(generated_texts)
    text = mutate(text, data.draw)
    path = scratch / "topology.yaml"
    path.write_text(text, encoding="utf-8")
    if source == "shipped":
        # Payload schema paths are relative to the topology file.
        (scratch / "schemas").mkdir(exist_ok=True)
        for schema in (SHIPPED.parent / "schemas").glob("*.json"):
            target = scratch / "schemas" / schema.name
            if not target.exists():
                target.write_text(schema.read_text(encoding="utf-8"), encoding="utf-8")
    try:
        load_topology(path, data.draw(st.sampled_from(ENVIRONMENTS)))
    except TopologyValidationError as exc:
        assert exc.errors
        assert_errors_well_formed(text, list(exc.errors))


# -- the fast schema check on documents mutated as data ---------------------------------------

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 3.0, 0.0, -1.0]),
    st.text(max_size=8),
    st.sampled_from(["7d", "30s", "1k", "5GiB", "workqueue", "explicit", "svc-a", "A", "a.b"]),
    st.lists(st.sampled_from(["1s", "a", 1, None]), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "description"]), st.integers(), max_size=2),
)


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths_of(v, (*prefix, i))
    return out


def mutate_data(doc: Any, draw: st.DrawFn) -> Any:
    path = draw(st.sampled_from(paths_of(doc)))
    if not path:
        return draw(odd_values)
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    leaf = path[-1]
    how = draw(st.sampled_from(["delete", "replace", "add_key", "rename"]))
    if how == "delete":
        del parent[leaf]
    elif how == "add_key" and isinstance(parent[leaf], dict):
        parent[leaf][draw(st.sampled_from(["extra", "description", "x", 1]))] = draw(odd_values)
    elif how == "rename" and isinstance(parent, dict):
        parent[f"{leaf}_"] = parent.pop(leaf)
    else:
        parent[leaf] = draw(odd_values)
    return doc


@PROPERTY
@given(st.one_of(st.just("shipped"), topologies()), st.data())
def test_fast_schema_check_on_data_mutations(source: Any, data: st.DataObject) -> None:
    doc = copy.deepcopy(SHIPPED_DATA) if source == "shipped" else source
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        doc = mutate_data(doc, data.draw)
    if FAST_CHECK(doc):
        assert JSONSCHEMA.is_valid(doc), list(JSONSCHEMA.iter_errors(doc))[:3]
