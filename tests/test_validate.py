"""Every check of the topology validator, each with a small bad file.

Each test writes its file inline (dedented, so line 1 is the line after the opening
quotes) and asserts the exact line, column and key path of every error, and the essence
of its message. Asserting the whole list also proves that a mistake is reported once,
without follow-on noise.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from bus_runtime._errors import TopologyError, TopologyValidationError
from bus_runtime.topology.loader import check_topology, load_topology
from bus_runtime.topology.yaml_source import load_yaml

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "topology" / "topology.yaml"
FIXTURES = Path(__file__).resolve().parent / "topologies"

Place = tuple[int, int, str]


def check(
    tmp_path: Path,
    text: str,
    *,
    env: str | None = None,
    files: dict[str, str] | None = None,
) -> list[TopologyError]:
    """Errors of `text` written as a topology file (all environments unless `env`)."""
    path = tmp_path / "topology.yaml"
    path.write_text(dedent(text), encoding="utf-8")
    for name, content in (files or {}).items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    _, errors = check_topology(path, env, all_environments=env is None)
    return errors


def places(errors: list[TopologyError]) -> list[Place]:
    return [(e.line, e.column, e.path) for e in errors]


def one(errors: list[TopologyError], line: int, column: int, path: str) -> str:
    """The message of the only error; fails unless exactly one error is at that place."""
    assert places(errors) == [(line, column, path)], "\n".join(str(e) for e in errors)
    return errors[0].message


def at(errors: list[TopologyError], line: int, column: int, path: str) -> str:
    """The message of the one error at that place, among others."""
    found = [e for e in errors if (e.line, e.column, e.path) == (line, column, path)]
    assert len(found) == 1, "\n".join(str(e) for e in errors)
    return found[0].message


# -- valid files -----------------------------------------------------------------------


def test_shipped_topology_is_valid_in_every_environment() -> None:
    topology, errors = check_topology(SHIPPED, all_environments=True)
    assert errors == []
    assert topology is not None
    for env in topology.environments:
        _, env_errors = check_topology(SHIPPED, env)
        assert env_errors == [], env


def test_small_valid_topology(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}, svc-b: {}}
        streams:
          ORDERS:
            retention: workqueue
            dead_letter: DLQ
            topics:
              order.created: {publishers: [svc-a]}
              "order.*.shipped": {publishers: [svc-a]}
            consumers:
              created-worker: {service: svc-b, topics: [order.created]}
              shipped-worker: {service: svc-a, topics: ["order.*.shipped"]}
          DLQ: {}
        environments:
          dev: {defaults: {stream: {replicas: 1}}}
        """,
    )
    assert errors == []


# -- the file itself ---------------------------------------------------------------------


def test_file_not_found_is_line_0(tmp_path: Path) -> None:
    _, errors = check_topology(tmp_path / "nope.yaml")
    assert places(errors) == [(0, 0, "")]
    assert "file not found" in errors[0].message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    message = one(check(tmp_path, text), 1, 1, "")
    assert "empty" in message
    assert "version: 1" in message


@pytest.mark.parametrize(
    ("text", "line", "kind"),
    [
        ("- version: 1\n- name: x\n", 1, "list"),
        ("just a string\n", 1, "str"),
        ("42\n", 1, "int"),
        ("# a list of streams?\n\n[a, b]\n", 3, "list"),
    ],
)
def test_document_not_a_mapping(tmp_path: Path, text: str, line: int, kind: str) -> None:
    message = one(check(tmp_path, text), line, 1, "")
    assert "expected a mapping" in message
    assert f"got a {kind}" in message


def test_several_documents(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams: {A: {topics: {a: {}}}}
        ---
        version: 1
        """,
    )
    message = one(errors, 4, 1, "")
    assert "several YAML documents" in message


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r", "\x85", "\u2028"])
@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_line_breaks_and_byte_order_mark_keep_the_places(
    tmp_path: Path, newline: str, bom: str
) -> None:
    text = "version: 1\nname: x\nstreams:\n  A:\n    retention: workque\n    topics: {a: {}}\n"
    path = tmp_path / "topology.yaml"
    path.write_bytes((bom + text.replace("\n", newline)).encode("utf-8"))
    _, errors = check_topology(path)
    assert places(errors) == [(5, 16, "streams.A.retention")]


# -- YAML syntax -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "essence"),
    [
        # A tab where indentation is expected.
        ("version: 1\nname: x\nstreams:\n\tA: {}\n", 4, 1, "cannot start any token"),
        # A mapping value where a plain scalar goes on.
        ("version: 1\nname: x: y\nstreams: {}\n", 2, 8, "mapping values are not allowed"),
        # An unclosed quote: found at the end of the input, the end of the last line.
        ('version: 1\nname: "x\nstreams: {}\n', 3, 12, "found unexpected end of stream"),
        # Bad indentation of a sibling key.
        ("version: 1\nstreams:\n  A: {}\n B: {}\n", 4, 2, "did not find expected key"),
    ],
)
def test_yaml_syntax_error(tmp_path: Path, text: str, line: int, column: int, essence: str) -> None:
    message = one(check(tmp_path, text), line, column, "")
    assert message.startswith("YAML syntax error: ")
    assert essence in message


def test_yaml_syntax_error_at_end_of_file_names_an_existing_line(tmp_path: Path) -> None:
    # The parser notices the missing `]` at the end of the input, which is past the last
    # line; the error must still name a line of the file (the last one).
    text = "version: 1\nname: x\nstreams: [a\n"
    message = one(check(tmp_path, text), 3, 12, "")
    assert "did not find expected ',' or ']'" in message


def test_bad_explicit_tag_is_reported_at_its_value(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            max_msgs: !!int many
            topics: {a: {}}
        """,
    )
    message = one(errors, 5, 15, "")
    assert "many" in message


@pytest.mark.parametrize("tag", ["!!timestamp", "!!float", "!!int", "!!bool"])
def test_unconstructible_tagged_scalar_is_an_error_not_a_crash(tmp_path: Path, tag: str) -> None:
    errors = check(tmp_path, f"version: 1\nname: x\nstreams: {{}}\nx: {tag} nonsense\n")
    assert places(errors) == [(4, 4, "")]
    assert "nonsense" in errors[0].message


def test_control_character_is_reported_at_its_place(tmp_path: Path) -> None:
    text = "version: 1\nname: shop\nstreams:\n  A: {topics: {a: {}}, description: ab\x07c}\n"
    message = one(check(tmp_path, text), 4, 39, "")
    assert message == "YAML error: control characters are not allowed (character #x0007)"


def test_control_character_after_non_ascii_text(tmp_path: Path) -> None:
    # libyaml counts bytes; the place must count characters.
    text = "version: 1\nname: shop\ndescription: ééé\x01\nstreams: {A: {topics: {a: {}}}}\n"
    assert "control characters" in one(check(tmp_path, text), 3, 17, "")


def test_python_tags_are_refused(tmp_path: Path) -> None:
    errors = check(tmp_path, "version: 1\nname: !!python/object:os.system x\nstreams: {}\n")
    message = one(errors, 2, 7, "")
    assert "could not determine a constructor" in message


@pytest.mark.parametrize("depth", [101, 100_000])
def test_deep_flow_nesting_is_refused_not_a_crash(tmp_path: Path, depth: int) -> None:
    # 30,000 levels overflowed the C stack of PyYAML's composer: the process died.
    text = (
        "version: 1\nname: x\nstreams:\n  A:\n    topics: {a: {}}\n"
        f"    description: {'[' * depth}{']' * depth}\n"
    )
    # The 101st collection: root, streams, A, then the 98th bracket.
    message = one(check(tmp_path, text), 6, 18 + 97, "")
    assert message == "the document nests deeper than 100 levels; a topology needs about 8"


def test_deep_block_nesting_is_refused(tmp_path: Path) -> None:
    nested = "".join(" " * (6 + i) + "-\n" for i in range(120))
    text = (
        f"version: 1\nname: x\nstreams:\n  A:\n    topics: {{a: {{}}}}\n    description:\n{nested}"
    )
    # Root, streams and A are 3 levels; the 98th `-` (line 7 + 97) is the 101st.
    message = one(check(tmp_path, text), 104, 104, "")
    assert "nests deeper than 100 levels" in message


def test_nested_alias_expansion_is_refused_not_a_hang(tmp_path: Path) -> None:
    # Nine levels of ten aliases are 10**10 values from a few hundred bytes.
    levels = "".join(
        f"      k{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
    )
    text = (
        "version: 1\nname: x\nstreams:\n  A:\n    topics: {a: {}}\n    metadata:\n"
        "      k0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + levels
    )
    errors = check(tmp_path, text)
    assert len(errors) == 1
    assert errors[0].line == 7
    assert errors[0].message.startswith("aliases (`*name`) expand the document to over ")


def test_recursive_alias_is_an_error_not_a_crash(tmp_path: Path) -> None:
    errors = check(tmp_path, "version: 1\nname: x\nstreams: &a\n  A: *a\n")
    assert len(errors) == 1
    assert 1 <= errors[0].line <= 4


# -- duplicate keys --------------------------------------------------------------------


def test_duplicate_top_level_key_names_both_places(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A: {topics: {a: {}}}
        name: other
        """,
    )
    message = one(errors, 5, 1, "name")
    assert "duplicate key `name`" in message
    assert "first defined at line 2, column 1" in message


def test_duplicate_nested_keys_all_reported(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          A:
            topics:
              a.b: {}
              a.b: {}
            consumers:
              c:
                service: svc-a
                max_deliver: 3
                max_deliver: 4
        """,
    )
    assert places(errors) == [
        (8, 7, "streams.A.topics.a.b"),
        (13, 9, "streams.A.consumers.c.max_deliver"),
    ]
    assert "duplicate key `a.b` (first defined at line 7, column 7)" in errors[0].message
    assert "duplicate key `max_deliver` (first defined at line 12, column 9)" in errors[1].message


def test_duplicate_key_in_flow_mapping(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A: {replicas: 1, topics: {a: {}}, replicas: 3}
        """,
    )
    message = one(errors, 4, 37, "streams.A.replicas")
    assert "first defined at line 4, column 7" in message


def test_duplicate_keys_reported_with_the_other_errors(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            retention: limits
            retention: workque
            topics: {a: {}}
        """,
    )
    # The first value is kept, so the misspelt second one is not validated: the duplicate
    # is the error, and nothing else.
    message = one(errors, 6, 5, "streams.A.retention")
    assert "first defined at line 5, column 5" in message
    errors = check(
        tmp_path,
        """\
        version: 1
        version: 1
        name: shop
        streems: {}
        """,
    )
    assert places(errors) == [(1, 1, ""), (2, 1, "version"), (4, 1, "streems")]
    assert "missing required key `streams`" in errors[0].message
    assert "did you mean `streams`?" in errors[2].message


def test_merge_key_override_is_not_a_duplicate(tmp_path: Path) -> None:
    # YAML's merge: the mapping's own keys override the merged ones.
    text = """\
        version: 1
        name: shop
        services: {svc-a: {}, svc-b: {}}
        streams:
          A:
            topics: {a: {}, b: {}}
            consumers:
              one: &worker {service: svc-a, topics: [a], max_deliver: 5}
              two: {<<: *worker, service: svc-b, topics: [b], max_deliver: 4, max_deliver: 6}
        """
    errors = check(tmp_path, text)
    message = one(errors, 9, 71, "streams.A.consumers.two.max_deliver")
    assert "duplicate key `max_deliver` (first defined at line 9, column 55)" in message
    path = tmp_path / "ok.yaml"
    path.write_text(dedent(text).replace(", max_deliver: 6", ""))
    two = load_topology(path).stream("A").consumer("two")
    assert (two.service, two.topics, two.max_deliver) == ("svc-b", ("b",), 4)


def test_error_in_merged_mapping_is_at_the_anchor(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          A:
            topics: {a: {}, b: {}}
            consumers:
              one: &worker {service: svc-a, topics: [a], max_delivr: 5}
              two: {<<: *worker, topics: [b]}
        """,
    )
    assert places(errors) == [
        (8, 50, "streams.A.consumers.one.max_delivr"),
        (8, 50, "streams.A.consumers.two.max_delivr"),
    ]


# -- non-string keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "shown"),
    [("1", "1"), ("true", "True"), ("null", "None"), ("2024-01-31", "datetime.date")],
)
def test_non_string_key(tmp_path: Path, key: str, shown: str) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          A:
            topics:
              {key}: {{}}
        """,
    )
    message = at(errors, 6, 7, f"streams.A.topics.{key}")
    assert f"key {shown}" in message
    assert "must be a string; quote it" in message
    assert all(e.line == 6 for e in errors), errors


def test_non_string_key_at_top_level_is_located(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams: {A: {topics: {a: {}}}}
        yes: 1
        """,
    )
    assert {(e.line, e.column, e.path) for e in errors} == {(4, 1, "yes")}
    assert any("must be a string" in e.message for e in errors)
    assert any("unknown key `yes` at the top level" in e.message for e in errors)


# -- required keys, version ----------------------------------------------------------


def test_missing_required_keys(tmp_path: Path) -> None:
    errors = check(tmp_path, "description: nothing else\n")
    assert places(errors) == [(1, 1, "")] * 3
    assert sorted(e.message for e in errors) == [
        "missing required key `name`",
        "missing required key `streams`",
        "missing required key `version`",
    ]


def test_unsupported_version(tmp_path: Path) -> None:
    errors = check(tmp_path, "version: 2\nname: shop\nstreams: {A: {topics: {a: {}}}}\n")
    message = one(errors, 1, 10, "version")
    assert "unsupported format version 2" in message


def test_missing_consumer_service(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            topics: {a: {}}
            consumers:
              c: {topics: [a]}
        """,
    )
    message = one(errors, 7, 10, "streams.A.consumers.c")
    assert "missing required key `service`" in message


def test_stream_without_subjects(tmp_path: Path) -> None:
    errors = check(tmp_path, "version: 1\nname: shop\nstreams:\n  A: {}\n")
    message = one(errors, 4, 3, "streams.A")
    assert "stream `A` has no subjects" in message


# -- unknown keys ----------------------------------------------------------------------

UNKNOWN_KEYS = """\
version: 1
name: shop
strems: {}
defaults:
  stream: {retension: limits}
  consumer: {ack_wiat: 1s}
services:
  svc-a: {descripton: x}
streams:
  A:
    retension: limits
    topics:
      a: {publisher: [svc-a]}
    consumers:
      c: {service: svc-a, max_delivr: 3}
environments:
  dev:
    descripton: x
    defaults: {stream: {max_agee: 1d}}
    streams:
      A: {max_byte: 1GiB, consumers: {c: {ack_wate: 1s}}}
"""


@pytest.mark.parametrize(
    ("line", "column", "path", "where", "meant"),
    [
        (3, 1, "strems", "at the top level", "streams"),
        (5, 12, "defaults.stream.retension", "in `defaults.stream`", "retention"),
        (6, 14, "defaults.consumer.ack_wiat", "in `defaults.consumer`", "ack_wait"),
        (8, 11, "services.svc-a.descripton", "in `services.svc-a`", "description"),
        (11, 5, "streams.A.retension", "in `streams.A`", "retention"),
        (13, 11, "streams.A.topics.a.publisher", "in `streams.A.topics.a`", "publishers"),
        (15, 27, "streams.A.consumers.c.max_delivr", "in `streams.A.consumers.c`", "max_deliver"),
        (18, 5, "environments.dev.descripton", "in `environments.dev`", "description"),
        (
            19,
            25,
            "environments.dev.defaults.stream.max_agee",
            "in `environments.dev.defaults.stream`",
            "max_age",
        ),
        (
            21,
            11,
            "environments.dev.streams.A.max_byte",
            "in `environments.dev.streams.A`",
            "max_bytes",
        ),
        (
            21,
            43,
            "environments.dev.streams.A.consumers.c.ack_wate",
            "in `environments.dev.streams.A.consumers.c`",
            "ack_wait",
        ),
    ],
)
def test_unknown_key_with_did_you_mean(
    tmp_path: Path, line: int, column: int, path: str, where: str, meant: str
) -> None:
    errors = check(tmp_path, UNKNOWN_KEYS)
    key = path.rsplit(".", 1)[-1]
    message = at(errors, line, column, path)
    assert message == f"unknown key `{key}` {where} (did you mean `{meant}`?)"


def test_unknown_keys_are_the_only_errors(tmp_path: Path) -> None:
    assert len(check(tmp_path, UNKNOWN_KEYS)) == 11


def test_unknown_key_without_a_close_match_lists_the_keys(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            topics:
              a: {zzzz: 1}
        """,
    )
    message = one(errors, 6, 11, "streams.A.topics.a.zzzz")
    assert message == (
        "unknown key `zzzz` in `streams.A.topics.a` "
        "(expected one of: description, publishers, schema, deprecated)"
    )


def test_environment_cannot_override_topics(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A: {topics: {a: {}}}
        environments:
          dev:
            streams:
              A:
                topics: {b: {}}
        """,
    )
    message = one(errors, 9, 9, "environments.dev.streams.A.topics")
    assert message.startswith("unknown key `topics` in `environments.dev.streams.A`")


# -- wrong types and enum values -----------------------------------------------------


def test_wrong_types(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          A:
            replicas: three
            max_msgs: "10"
            deny_delete: "yes"
            max_age: 1.5
            topics:
              a: {publishers: svc-a, deprecated: 1}
            consumers:
              c: {service: svc-a, max_deliver: 2.0, backoff: 1s}
          B: [not, a, mapping]
        """,
    )
    assert places(errors) == [
        (6, 15, "streams.A.replicas"),
        (7, 15, "streams.A.max_msgs"),
        (8, 18, "streams.A.deny_delete"),
        (9, 14, "streams.A.max_age"),
        (11, 23, "streams.A.topics.a.publishers"),
        (11, 42, "streams.A.topics.a.deprecated"),
        (13, 40, "streams.A.consumers.c.max_deliver"),
        (13, 54, "streams.A.consumers.c.backoff"),
        (14, 6, "streams.B"),
    ]
    m = [e.message for e in errors]
    assert m[0] == "expected an integer, got str ('three')"
    assert m[1] == "expected an integer, got str ('10')"
    assert m[2] == "expected a boolean, got str ('yes')"
    assert m[3] == "expected a string or integer, got float (1.5)"
    assert m[4] == "expected an array, got str ('svc-a')"
    assert m[5] == "expected a boolean, got int (1)"
    assert m[6] == "expected an integer, got float (2.0)"
    assert m[7] == "expected an array, got str ('1s')"
    assert m[8].startswith("expected an object, got list")


@pytest.mark.parametrize(
    ("field", "value", "column"),
    [("replicas", "3.0", 15), ("max_msgs", "1000.0", 15), ("max_consumers", "1e3", 20)],
)
def test_float_is_not_an_integer(tmp_path: Path, field: str, value: str, column: int) -> None:
    # JSON Schema counts 3.0 as an integer; the server's JSON decoding refuses it.
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          A:
            {field}: {value}
            topics: {{a: {{}}}}
        """,
    )
    message = one(errors, 5, column, f"streams.A.{field}")
    assert message.startswith("expected an integer, got ")


def test_values_in_messages_are_cut_short(tmp_path: Path) -> None:
    many = ", ".join(f"{{s{i}: x}}" for i in range(500))
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams: [{many}]
        """,
    )
    message = one(errors, 3, 10, "streams")
    assert (
        message
        == "expected an object, got list ([{'s0': 'x'}, {'s1': 'x'}, {'s2': 'x'}, {'s3': 'x'}, ...])"
    )
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          A: {{description: {"a" * 5000}, topics: {{a: {{}}}}}}
        """,
    )
    assert one(errors, 4, 20, "streams.A.description") == (
        "`description` is 5000 characters long; at most 4096"
    )


def test_null_value_where_a_mapping_is_expected(tmp_path: Path) -> None:
    errors = check(tmp_path, "version: 1\nname: shop\nstreams:\n")
    message = one(errors, 3, 9, "streams")
    assert message == "expected an object, got nothing (null)"


@pytest.mark.parametrize(
    ("field", "value", "choices", "hint"),
    [
        ("retention", "workque", "limits, interest, workqueue", "workqueue"),
        ("storage", "memroy", "file, memory", "memory"),
        ("discard", "neww", "old, new", "new"),
        ("compression", "s3", "none, s2", None),
        ("storage", "disk", "file, memory", None),
    ],
)
def test_stream_enum_value(
    tmp_path: Path, field: str, value: str, choices: str, hint: str | None
) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          A:
            {field}: {value}
            topics: {{a: {{}}}}
        """,
    )
    message = one(errors, 5, 7 + len(field), f"streams.A.{field}")
    expected = f"'{value}' is not one of {choices}"
    if hint:
        expected += f" (did you mean `{hint}`?)"
    assert message == expected


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [
        ("ack_policy", "explict", "explicit"),
        ("deliver_policy", "lastt", "last"),
        ("replay_policy", "orignal", "original"),
    ],
)
def test_consumer_enum_value(tmp_path: Path, field: str, value: str, hint: str) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        services: {{svc-a: {{}}}}
        streams:
          A:
            topics: {{a: {{}}}}
            consumers:
              c:
                service: svc-a
                {field}: {value}
        """,
    )
    message = one(errors, 10, 11 + len(field), f"streams.A.consumers.c.{field}")
    assert message.startswith(f"'{value}' is not one of ")
    assert message.endswith(f"(did you mean `{hint}`?)")


def test_enum_value_in_defaults_and_environment(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        defaults:
          consumer: {ack_policy: explicitt}
        streams:
          A: {topics: {a: {}}}
        environments:
          dev:
            defaults: {stream: {retention: intrest}}
        """,
    )
    assert places(errors) == [
        (4, 26, "defaults.consumer.ack_policy"),
        (9, 36, "environments.dev.defaults.stream.retention"),
    ]
    assert "(did you mean `explicit`?)" in errors[0].message
    assert "(did you mean `interest`?)" in errors[1].message


def test_max_deliver_zero(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        defaults:
          consumer: {max_deliver: 0}
        streams:
          A: {topics: {a: {}}}
        """,
    )
    message = one(errors, 4, 27, "defaults.consumer.max_deliver")
    assert "`max_deliver` cannot be 0" in message


# -- durations and sizes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "essence"),
    [
        ("max_age", "7x", "'7x' is not a duration"),
        ("max_age", "7 days", "'7 days' is not a duration"),
        ("max_age", "'30'", "did you mean '30s'?"),
        ("duplicate_window", "2m30", "'2m30' is not a duration"),
        ("subject_delete_marker_ttl", "-1", "-1 is out of range"),
        ("max_age", "-5s", "'-5s' is not a duration"),
        ("max_bytes", "10 GiBs", "'10 GiBs' is not a size"),
        ("max_bytes", "5XB", "'5XB' is not a size"),
        ("max_msg_size", "-5", "-5 is out of range"),
        ("max_bytes", "lots", "'lots' is not a size"),
    ],
)
def test_unparsable_or_negative_duration_and_size(
    tmp_path: Path, field: str, value: str, essence: str
) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          A:
            topics: {{a: {{}}}}
            {field}: {value}
        """,
    )
    message = one(errors, 6, 7 + len(field), f"streams.A.{field}")
    assert essence in message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "max_bytes",
            "1k",
            "'1k' is not written as a size: units are KB, MB, GB, TB (powers of 1000) and "
            "KiB, MiB, GiB, TiB (powers of 1024) (did you mean '1KiB'?)",
        ),
        ("max_msg_size", "1Kb", "(did you mean '1KB'?)"),
        ("max_age", "' 30s'", "' 30s' is not written as a duration (did you mean '30s'?)"),
    ],
)
def test_size_or_duration_the_parser_reads_but_the_schema_refuses(
    tmp_path: Path, field: str, value: str, message: str
) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          A:
            topics: {{a: {{}}}}
            {field}: {value}
        """,
    )
    assert message in one(errors, 6, 7 + len(field), f"streams.A.{field}")


@pytest.mark.parametrize(
    ("field", "value", "column", "essence"),
    [
        ("max_age", "200000d", 14, "'200000d' is too long: the server takes at most 2**63-1 ns"),
        ("max_msgs", "9223372036854775808", 15, "is too large: the server takes at most 2**63-1"),
        ("max_bytes", "9000PB", 16, "'9000PB' is not a size"),
        ("max_bytes", "10000000TB", 16, "'10000000TB' is too large"),
    ],
)
def test_values_beyond_64_bits(
    tmp_path: Path, field: str, value: str, column: int, essence: str
) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          A:
            topics: {{a: {{}}}}
            {field}: {value}
        """,
    )
    assert essence in one(errors, 6, column, f"streams.A.{field}")


def test_subject_delete_marker_ttl_and_max_request_expires_minimums(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}, svc-b: {}}
        streams:
          A:
            subject_delete_marker_ttl: 500ms
            topics: {a: {}}
            consumers:
              c: {service: svc-a, max_request_expires: 999us}
              d: {service: svc-b, max_request_expires: 1ms, topics: [a]}
          B:
            subject_delete_marker_ttl: 1s
            allow_msg_ttl: true
            allow_rollup_hdrs: true
            topics: {b: {}}
        """,
    )
    assert places(errors) == [
        (6, 32, "streams.A.subject_delete_marker_ttl"),
        (6, 32, "streams.A.subject_delete_marker_ttl"),
        (9, 48, "streams.A.consumers.c.max_request_expires"),
    ]
    errors = [e for e in errors if "delete markers" not in e.message]
    assert errors[0].message == (
        "subject_delete_marker_ttl 500ms is below the server's minimum of 1s"
    )
    assert errors[1].message == (
        "max_request_expires 999us is below the server's minimum of 1ms (server error 10115)"
    )


@pytest.mark.parametrize(
    ("settings", "needs"),
    [
        ("", "`allow_msg_ttl: true` and `allow_rollup_hdrs: true`"),
        ("allow_msg_ttl: true\n    ", "`allow_rollup_hdrs: true`"),
        ("allow_msg_ttl: true\n    allow_rollup_hdrs: false\n    ", "`allow_rollup_hdrs: true`"),
        ("allow_rollup_hdrs: true\n    ", "`allow_msg_ttl: true`"),
        (
            "allow_msg_ttl: true\n    allow_rollup_hdrs: true\n    deny_purge: true\n    ",
            "`deny_purge: false`",
        ),
    ],
)
def test_delete_markers_need_what_the_server_turns_on(
    tmp_path: Path, settings: str, needs: str
) -> None:
    # The server (2.11-2.15) stores a stream with subject_delete_marker_ttl with
    # allow_msg_ttl and allow_rollup_hdrs on and deny_purge off whatever was sent
    # (tests/test_validate_server.py finds any such rewrite the validator misses).
    errors = check(
        tmp_path,
        f"""\
version: 1
name: shop
services: {{svc-a: {{}}}}
streams:
  A:
    {settings}subject_delete_marker_ttl: 1m
    topics: {{a: {{}}}}
""",
    )
    marker = [e for e in errors if "delete markers" in e.message]
    assert len(marker) == 1, errors
    assert marker[0].message.endswith(f"write {needs} in stream `A`")
    assert marker[0].path == "streams.A.subject_delete_marker_ttl"


def test_delete_markers_with_what_the_server_turns_on_pass(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
version: 1
name: shop
services: {svc-a: {}}
streams:
  A:
    allow_msg_ttl: true
    allow_rollup_hdrs: true
    deny_purge: false
    subject_delete_marker_ttl: 1m
    topics: {a: {}}
""",
    )
    assert errors == []


@pytest.mark.parametrize("value", ["2x", "1.5", "-1s"])
def test_unparsable_backoff_item(tmp_path: Path, value: str) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        services: {{svc-a: {{}}}}
        streams:
          A:
            topics: {{a: {{}}}}
            consumers:
              c:
                service: svc-a
                backoff: [1s, {value}]
        """,
    )
    # Only the bad delay is reported, not the list around it as well.
    message = one(errors, 10, 23, "streams.A.consumers.c.backoff[1]")
    assert value in message


def test_unparsable_consumer_duration(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        defaults:
          consumer: {ack_wait: soon}
        streams:
          A:
            topics: {a: {}}
            consumers:
              c: {service: svc-a, max_request_expires: 1y}
        """,
    )
    assert places(errors) == [
        (5, 24, "defaults.consumer.ack_wait"),
        (10, 48, "streams.A.consumers.c.max_request_expires"),
    ]
    assert "'soon' is not a duration" in errors[0].message
    assert "'1y' is not a duration" in errors[1].message


def test_max_age_below_100ms(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        defaults:
          stream: {max_age: 10ms}
        streams:
          A:
            topics: {a: {}}
          B:
            max_age: 99ms
            topics: {b: {}}
          C:
            max_age: 0
            topics: {c: {}}
        """,
    )
    assert places(errors) == [
        (4, 21, "defaults.stream.max_age"),
        (9, 14, "streams.B.max_age"),
    ]
    assert errors[0].message.startswith("max_age 10ms is below the server's minimum of 100ms")
    assert errors[1].message.startswith("max_age 99ms is below the server's minimum of 100ms")


def test_duplicate_window_below_100ms(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            duplicate_window: 50ms
            topics: {a: {}}
          B:
            duplicate_window: 30
            topics: {b: {}}
          C:
            duplicate_window: 100ms
            topics: {c: {}}
        """,
    )
    assert places(errors) == [
        (5, 23, "streams.A.duplicate_window"),
        (8, 23, "streams.B.duplicate_window"),
    ]
    assert "duplicate_window 50ms is below the server's minimum of 100ms" in errors[0].message
    # A plain integer is nanoseconds.
    assert "duplicate_window 30ns is below" in errors[1].message


def test_duplicate_window_longer_than_max_age(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            max_age: 1m
            duplicate_window: 2m
            topics: {a: {}}
          B:
            max_age: 2m
            duplicate_window: 2m
            topics: {b: {}}
        """,
    )
    message = one(errors, 6, 23, "streams.A.duplicate_window")
    assert message.startswith("duplicate_window 2m is longer than max_age 1m of stream `A`")


def test_duplicate_window_longer_than_max_age_by_environment_override(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            max_age: 1h
            duplicate_window: 2m
            topics: {a: {}}
        environments:
          dev: {}
          prod:
            streams:
              A: {duplicate_window: 2h}
        """,
    )
    message = one(errors, 12, 29, "environments.prod.streams.A.duplicate_window")
    assert "duplicate_window 2h is longer than max_age 1h of stream `A`" in message


def test_duplicate_window_longer_than_max_age_by_environment_defaults(tmp_path: Path) -> None:
    text = """\
        version: 1
        name: shop
        defaults:
          stream: {max_age: 7d, duplicate_window: 2m}
        streams:
          A:
            topics: {a: {}}
        environments:
          prod: {}
          dev:
            defaults: {stream: {max_age: 1m}}
        """
    errors = check(tmp_path, text)
    # Only dev's max_age causes it: the error is at the duplicate_window and names dev.
    message = one(errors, 4, 43, "defaults.stream.duplicate_window")
    assert message == (
        "duplicate_window 2m is longer than max_age 1m of stream `A`; the server refuses it "
        "(in environment `dev`)"
    )
    # Checked for that environment alone, the same error (dev is then the context).
    errors = check(tmp_path, text, env="dev")
    message = one(errors, 4, 43, "defaults.stream.duplicate_window")
    assert message.startswith("duplicate_window 2m is longer than max_age 1m of stream `A`")
    assert check(tmp_path, text, env="prod") == []


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad name", "A.B", '"C*"', '"D>"', "D/E", "'F\\G'", "X" * 256])
def test_invalid_stream_name(tmp_path: Path, name: str) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          {name}: {{topics: {{a: {{}}}}}}
        """,
    )
    assert len(errors) == 1, errors
    assert (errors[0].line, errors[0].column) == (4, 3)
    assert errors[0].path.startswith("streams.")
    assert "is not a valid stream name: 1 to 255 characters, none of whitespace" in (
        errors[0].message
    )


def test_longest_stream_name_is_valid(tmp_path: Path) -> None:
    name = "X" * 255
    assert (
        check(tmp_path, f"version: 1\nname: s\nstreams:\n  {name}: {{topics: {{a: {{}}}}}}\n") == []
    )


@pytest.mark.parametrize("name", ["bad.consumer", '"bad consumer"', '"c>"', '"c*"', "a/b"])
def test_invalid_consumer_name(tmp_path: Path, name: str) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        services: {{svc-a: {{}}}}
        streams:
          A:
            topics: {{a: {{}}}}
            consumers:
              {name}: {{service: svc-a}}
        """,
    )
    bare = name.strip('"')
    message = one(errors, 8, 7, f"streams.A.consumers.{bare}")
    assert f"`{bare}` is not a valid consumer (durable) name" in message


@pytest.mark.parametrize("name", ["Svc_A", "svc_a", "-svc", "svc-", "SVC"])
def test_invalid_service_name(tmp_path: Path, name: str) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        services:
          {name}: {{}}
        streams:
          A: {{topics: {{a: {{}}}}}}
        """,
    )
    message = one(errors, 4, 3, f"services.{name}")
    assert message == (
        f"`{name}` is not a valid service name: lower-case letters, digits and `-` (like `svc-ocr`)"
    )


def test_invalid_system_and_environment_names(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: Shop_1
        streams:
          A: {topics: {a: {}}}
        environments:
          Dev: {}
        """,
    )
    assert places(errors) == [(2, 7, "name"), (6, 3, "environments.Dev")]
    assert "`Shop_1` is not a valid system name" in errors[0].message
    assert "`Dev` is not a valid environment name" in errors[1].message


@pytest.mark.parametrize(
    ("topic", "essence"),
    [
        ('"a..b"', "empty token"),
        ('"a.>"', "'>'"),
        ('"a b"', "whitespace"),
        ('".a"', "empty token"),
    ],
)
def test_invalid_topic_name(tmp_path: Path, topic: str, essence: str) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          A:
            topics:
              {topic}: {{}}
              ok: {{}}
        """,
    )
    bare = topic.strip('"')
    message = one(errors, 6, 7, f"streams.A.topics.{bare}")
    assert f"`{bare}` is not a valid topic name" in message
    assert essence in message


# -- replicas --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 6, -1, 100])
def test_stream_replicas_outside_1_to_5(tmp_path: Path, value: int) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        streams:
          A:
            replicas: {value}
            topics: {{a: {{}}}}
        """,
    )
    message = one(errors, 5, 15, "streams.A.replicas")
    assert message == f"`replicas` must be between 1 and 5; got {value}"


def test_replicas_outside_1_to_5_in_defaults_consumer_and_environment(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        defaults:
          stream: {replicas: 7}
        streams:
          A:
            replicas: 1
            topics: {a: {}}
            consumers:
              c: {service: svc-a, replicas: 0}
        environments:
          prod:
            streams:
              A: {replicas: 9}
        """,
    )
    assert places(errors) == [
        (5, 22, "defaults.stream.replicas"),
        (11, 37, "streams.A.consumers.c.replicas"),
        (15, 21, "environments.prod.streams.A.replicas"),
    ]
    assert errors[0].message == "`replicas` must be between 1 and 5; got 7"
    assert errors[1].message == "`replicas` must be between 1 and 5; got 0"
    assert errors[2].message == "`replicas` must be between 1 and 5; got 9"


def test_consumer_replicas_above_the_streams(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          A:
            replicas: 1
            topics: {a: {}}
            consumers:
              c: {service: svc-a, replicas: 3}
        """,
    )
    message = one(errors, 9, 37, "streams.A.consumers.c.replicas")
    assert "consumer replicas 3 exceed stream `A` replicas 1" in message


# -- subject overlap -------------------------------------------------------------------


def test_same_subject_in_two_streams_names_both(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            subject_prefix: shop
            topics: {order.created: {}}
          B:
            subject_prefix: shop.order
            topics: {created: {}}
        """,
    )
    message = one(errors, 9, 14, "streams.B.topics.created")
    assert message.startswith(
        "subject `shop.order.created` of stream `B` (topic `created`) overlaps subject "
        "`shop.order.created` of stream `A` (topic `order.created`)"
    )
    assert "10065" in message


def test_star_wildcard_overlap_between_streams(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            subject_prefix: orders
            topics: {created.eu: {}, "*.us": {}}
          B:
            subject_prefix: orders
            topics: {"created.*": {}}
          C:
            subject_prefix: orders
            topics: {created.asia: {}, created: {}}
        """,
    )
    # created.asia overlaps B's created.*; `created` (two tokens) overlaps nothing.
    assert places(errors) == [
        (9, 14, "streams.B.topics.created.*"),
        (9, 14, "streams.B.topics.created.*"),
        (12, 14, "streams.C.topics.created.asia"),
    ]
    messages = sorted(e.message for e in errors[:2])
    assert "overlaps subject `orders.*.us` of stream `A` (topic `*.us`)" in messages[0]
    assert (
        "overlaps subject `orders.created.eu` of stream `A` (topic `created.eu`)" in (messages[1])
    )
    assert errors[2].message.startswith(
        "subject `orders.created.asia` of stream `C` (topic `created.asia`) overlaps subject "
        "`orders.created.*` of stream `B` (topic `created.*`)"
    )


def test_no_overlap_when_prefixes_differ(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A: {subject_prefix: a, topics: {"*": {}, "x.*": {}}}
          B: {subject_prefix: b, topics: {"*.b": {}}}
          C: {subject_prefix: a.x, topics: {"y.z": {}}}
        """,
    )
    assert errors == []


def test_dead_letter_subjects_overlap_another_stream(tmp_path: Path) -> None:
    # The dead-letter stream takes `dlq.A.>`: every subject under it, at any depth.
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            dead_letter: DLQ
            topics: {a: {}}
          DLQ:
            subject_prefix: dlq
          C:
            subject_prefix: dlq.A
            topics: {x.y.z: {}}
          D:
            subject_prefix: dlq
            topics: {A: {}, B.x: {}}
        """,
    )
    # `dlq.A` itself (one token less) is not under `dlq.A.>`; `dlq.B.x` is another origin.
    message = one(errors, 11, 14, "streams.C.topics.x.y.z")
    assert message.startswith(
        "subject `dlq.A.x.y.z` of stream `C` (topic `x.y.z`) overlaps subject `dlq.A.>` of "
        "stream `DLQ` (dead letters of `A`)"
    )


def test_dead_letter_subjects_overlap_a_topic_of_the_same_stream(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            subject_prefix: app
            dead_letter: DLQ
            topics: {a: {}}
          DLQ:
            subject_prefix: app
            topics: {"A.*": {}}
        """,
    )
    # Reported where the dead-letter subject comes from: A's `dead_letter`.
    message = one(errors, 6, 5, "streams.A.dead_letter")
    assert message.startswith(
        "dead letters of `A` (subject `app.A.>`) overlaps topic `A.*` (subject `app.A.*`) "
        "in the same stream `DLQ`"
    )


def test_overlapping_topics_in_one_stream(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            topics:
              a.b: {}
              a.c.d: {}
              "a.*": {}
              "*.c.*": {}
        """,
    )
    # `a.*` takes two tokens only, so it does not overlap `a.c.d`.
    assert places(errors) == [(8, 7, "streams.A.topics.a.*"), (9, 7, "streams.A.topics.*.c.*")]
    assert errors[0].message.startswith(
        "topic `a.*` (subject `A.a.*`) overlaps topic `a.b` (subject `A.a.b`) in the same "
        "stream `A`; the server refuses overlapping subjects in one stream"
    )
    assert errors[1].message.startswith(
        "topic `*.c.*` (subject `A.*.c.*`) overlaps topic `a.c.d` (subject `A.a.c.d`) in the "
        "same stream `A`"
    )


def test_topic_name_declared_in_two_streams(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            topics: {a: {}}
          B:
            topics:
              a: {}
        """,
    )
    message = one(errors, 8, 7, "streams.B.topics.a")
    assert message.startswith("topic `a` is also declared in stream `A`")


# -- work-queue streams ----------------------------------------------------------------


def test_workqueue_consumers_on_the_same_topic_name_both(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}, svc-b: {}}
        streams:
          JOBS:
            retention: workqueue
            topics: {a: {}, b: {}}
            consumers:
              one: {service: svc-a, topics: [a]}
              two:
                service: svc-b
                topics: [b, a]
        """,
    )
    message = one(errors, 12, 17, "streams.JOBS.consumers.two.topics")
    assert message.startswith(
        "consumers `one` and `two` of work-queue stream `JOBS` overlap (`two` takes `JOBS.a`)"
    )
    assert "10100" in message


def test_workqueue_consumers_overlap_by_wildcard(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}, svc-b: {}}
        streams:
          JOBS:
            retention: workqueue
            topics: {"a.*.x": {}, "b.*": {}}
            consumers:
              one: {service: svc-a, topics: ["a.*.x"]}
              two: {service: svc-b, topics: ["b.*"]}
              three: {service: svc-b, topics: ["a.*.x"]}
        """,
    )
    message = one(errors, 11, 39, "streams.JOBS.consumers.three.topics")
    assert message.startswith("consumers `one` and `three` of work-queue stream `JOBS` overlap")


def test_workqueue_unfiltered_consumer_overlaps_every_other(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}, svc-b: {}}
        streams:
          JOBS:
            retention: workqueue
            topics: {a: {}, b: {}}
            consumers:
              one: {service: svc-a, topics: [a]}
              all: {service: svc-b}
        """,
    )
    message = one(errors, 10, 7, "streams.JOBS.consumers.all")
    assert message.startswith(
        "consumers `one` and `all` of work-queue stream `JOBS` overlap (`all` takes every subject)"
    )


def test_workqueue_consumer_with_a_misspelt_topic_is_one_error(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}, svc-b: {}}
        streams:
          JOBS:
            retention: workqueue
            topics: {a: {}, b: {}}
            consumers:
              one: {service: svc-a, topics: [a]}
              two: {service: svc-b, topics: [bb]}
        """,
    )
    message = one(errors, 10, 38, "streams.JOBS.consumers.two.topics[0]")
    assert message == "topic `bb` is not declared in stream `JOBS` (did you mean `b`?)"


def test_workqueue_consumer_ack_policy_and_deliver_policy(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          JOBS:
            retention: workqueue
            topics: {a: {}, b: {}}
            consumers:
              one: {service: svc-a, topics: [a], ack_policy: all}
              two:
                service: svc-a
                topics: [b]
                deliver_policy: new
        """,
    )
    assert places(errors) == [
        (9, 54, "streams.JOBS.consumers.one.ack_policy"),
        (13, 25, "streams.JOBS.consumers.two.deliver_policy"),
    ]
    assert errors[0].message == (
        "consumer `one` of work-queue stream `JOBS` must be ack_policy: explicit, not all "
        "(server error 10098)"
    )
    assert errors[1].message == (
        "consumer `two` of work-queue stream `JOBS` must be deliver_policy: all, not new "
        "(server error 10101)"
    )


def test_workqueue_rules_from_defaults_point_at_the_default(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        defaults:
          consumer: {ack_policy: none}
        streams:
          JOBS:
            retention: workqueue
            topics: {a: {}}
            consumers:
              one: {service: svc-a}
          EVENTS:
            topics: {e: {}}
            consumers:
              fine: {service: svc-a}
        """,
    )
    message = one(errors, 5, 26, "defaults.consumer.ack_policy")
    assert "consumer `one` of work-queue stream `JOBS` must be ack_policy: explicit" in message


def test_workqueue_made_by_environment(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}, svc-b: {}}
        streams:
          A:
            topics: {a: {}}
            consumers:
              one: {service: svc-a}
              two: {service: svc-b}
        environments:
          dev:
            streams:
              A: {retention: workqueue}
        """,
    )
    message = one(errors, 9, 7, "streams.A.consumers.two")
    assert "consumers `one` and `two` of work-queue stream `A` overlap" in message
    assert message.endswith("(in environment `dev`)")


def test_last_per_subject_needs_topics(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}, svc-b: {}}
        streams:
          A:
            topics: {a: {}, b: {}}
            consumers:
              latest: {service: svc-a, deliver_policy: last_per_subject}
              filtered: {service: svc-b, topics: [a], deliver_policy: last_per_subject}
        """,
    )
    message = one(errors, 8, 48, "streams.A.consumers.latest.deliver_policy")
    assert message == "deliver_policy last_per_subject needs topics (a filter) (server error 10094)"


@pytest.mark.parametrize(
    ("name", "bad"),
    [("É" * 127, False), ("É" * 128, True), ("x" * 255, False)],
)
def test_stream_and_consumer_name_length_is_in_bytes(tmp_path: Path, name: str, bad: bool) -> None:
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        services: {{svc-a: {{}}}}
        streams:
          {name}:
            topics: {{a: {{}}}}
            consumers:
              {name}: {{service: svc-a}}
        """,
    )
    if not bad:
        assert errors == []
        return
    assert places(errors) == [(5, 3, f"streams.{name}"), (8, 7, f"streams.{name}.consumers.{name}")]
    assert (
        errors[0].message
        == f"stream name `{name}` is 256 bytes long in UTF-8; the server allows 255"
    )
    assert errors[1].message.startswith(f"consumer name `{name}` is 256 bytes long")


def test_description_length_is_in_bytes(tmp_path: Path) -> None:
    long = "é" * 2049
    errors = check(
        tmp_path,
        f"""\
        version: 1
        name: shop
        services: {{svc-a: {{}}}}
        streams:
          A:
            description: {long}
            topics: {{a: {{}}}}
            consumers:
              c: {{service: svc-a, description: {"é" * 2048}}}
        environments:
          dev:
            streams:
              A:
                consumers:
                  c: {{description: {long}}}
        """,
    )
    assert places(errors) == [
        (6, 18, "streams.A.description"),
        (15, 28, "environments.dev.streams.A.consumers.c.description"),
    ]
    assert errors[0].message == "description is 4098 bytes long in UTF-8; the server allows 4096"


# -- references ------------------------------------------------------------------------


def test_consumer_lists_a_topic_of_another_stream(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          A:
            topics: {a: {}}
          B:
            topics: {b: {}}
            consumers:
              c: {service: svc-a, topics: [b, a, bb]}
        """,
    )
    assert places(errors) == [
        (10, 39, "streams.B.consumers.c.topics[1]"),
        (10, 42, "streams.B.consumers.c.topics[2]"),
    ]
    assert errors[0].message.startswith("topic `a` belongs to stream `A`, not `B`")
    assert "declare it under streams.A.consumers" in errors[0].message
    assert errors[1].message == "topic `bb` is not declared in stream `B` (did you mean `b`?)"


def test_topic_listed_twice_by_one_consumer(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          A:
            topics: {a: {}}
            consumers:
              c: {service: svc-a, topics: [a, a]}
        """,
    )
    assert (
        one(errors, 8, 35, "streams.A.consumers.c.topics") == "`topics` lists the same item twice"
    )


def test_undeclared_publisher_and_consumer_service(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services:
          svc-orders: {}
          svc-mail: {}
        streams:
          A:
            topics:
              a:
                publishers: [svc-orders, svc-order]
              b: {publishers: [svc-zzz]}
            consumers:
              c: {service: svc-mial}
        """,
    )
    assert places(errors) == [
        (10, 34, "streams.A.topics.a.publishers[1]"),
        (11, 24, "streams.A.topics.b.publishers[0]"),
        (13, 20, "streams.A.consumers.c.service"),
    ]
    assert errors[0].message == (
        "publisher `svc-order` is not declared under `services` (did you mean `svc-orders`?)"
    )
    assert errors[1].message == "publisher `svc-zzz` is not declared under `services`"
    assert errors[2].message == (
        "service `svc-mial` is not declared under `services` (did you mean `svc-mail`?)"
    )


def test_invalid_publisher_name(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          A:
            topics: {a: {publishers: [svc-a, Svc_A]}}
        """,
    )
    assert places(errors) == [(6, 38, "streams.A.topics.a.publishers[1]")] * 2
    assert errors[0].message.startswith("`Svc_A` is not a valid service name")
    assert errors[1].message.startswith("publisher `Svc_A` is not declared under `services`")


def test_services_section_missing(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            topics: {a: {publishers: [svc-a]}}
        """,
    )
    message = one(errors, 5, 31, "streams.A.topics.a.publishers[0]")
    assert message == "publisher `svc-a` is not declared under `services`"


def test_dead_letter_names_no_stream(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            dead_letter: DLQQ
            topics: {a: {}}
          B:
            dead_letter: NOWHERE
            topics: {b: {}}
          DLQ: {topics: {d: {}}}
        """,
    )
    assert places(errors) == [(5, 18, "streams.A.dead_letter"), (8, 18, "streams.B.dead_letter")]
    assert errors[0].message == "dead_letter `DLQQ` names no declared stream (did you mean `DLQ`?)"
    assert errors[1].message == "dead_letter `NOWHERE` names no declared stream"


def test_dead_letter_names_its_own_stream(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            topics: {a: {}}
            dead_letter: A
        """,
    )
    message = one(errors, 6, 18, "streams.A.dead_letter")
    assert message == "stream `A` cannot be its own dead_letter stream"


def test_dead_letter_set_by_environment_to_unknown_stream(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A: {topics: {a: {}}}
          DLQ: {topics: {d: {}}}
        environments:
          dev:
            streams:
              A: {dead_letter: DLX}
        """,
    )
    message = one(errors, 9, 24, "environments.dev.streams.A.dead_letter")
    assert message == "dead_letter `DLX` names no declared stream (did you mean `DLQ`?)"


# -- consumer settings -----------------------------------------------------------------


def test_backoff_longer_than_max_deliver(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          A:
            topics: {a: {}, b: {}, c: {}}
            consumers:
              one:
                service: svc-a
                topics: [a]
                backoff: [1s, 2s, 3s, 4s]
              two:
                service: svc-a
                topics: [b]
                max_deliver: 2
                backoff: [1s, 2s, 3s]
              three:
                service: svc-a
                topics: [c]
                max_deliver: -1
                backoff: [1s, 2s, 3s, 4s, 5s]
        """,
    )
    assert places(errors) == [
        (11, 18, "streams.A.consumers.one.backoff"),
        (16, 18, "streams.A.consumers.two.backoff"),
    ]
    # The built-in max_deliver is 3.
    assert errors[0].message.startswith("backoff has 4 delays but max_deliver is 3")
    assert errors[1].message.startswith("backoff has 3 delays but max_deliver is 2")
    assert "10116" in errors[1].message


def test_backoff_longer_than_max_deliver_by_environment_override(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          A:
            topics: {a: {}}
            consumers:
              c: {service: svc-a, max_deliver: 5, backoff: [1s, 2s, 3s]}
        environments:
          dev:
            streams:
              A:
                consumers:
                  c: {max_deliver: 2}
        """,
    )
    message = one(errors, 8, 52, "streams.A.consumers.c.backoff")
    assert message.startswith("backoff has 3 delays but max_deliver is 2")
    assert message.endswith("(in environment `dev`)")


def test_ack_wait_next_to_a_differing_backoff(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        defaults:
          consumer: {ack_wait: 10s}
        streams:
          A:
            topics: {a: {}, b: {}, c: {}}
            consumers:
              differs: {service: svc-a, topics: [a], ack_wait: 5s, backoff: [1s, 2s]}
              equal: {service: svc-a, topics: [b], ack_wait: 1s, backoff: [1s, 2s]}
              default-only: {service: svc-a, topics: [c], backoff: [3s]}
        """,
    )
    # Only a consumer's own ack_wait is flagged: the default applies to many consumers.
    message = one(errors, 10, 56, "streams.A.consumers.differs.ack_wait")
    assert message.startswith(
        "ack_wait 5s has no effect with a backoff: the server uses backoff[0] (1s)"
    )


# -- payload schemas -------------------------------------------------------------------


def test_payload_schema_problems(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        streams:
          A:
            topics:
              a: {schema: schemas/missing.json}
              b: {schema: schemas/broken.json}
              c: {schema: schemas/list.json}
              d: {schema: schemas/bad-type.json}
              e: {schema: schemas/ok.json}
              f: {schema: schemas/bad-minimum.json}
              g: {schema: schemas/broken.json}
        """,
        files={
            "schemas/broken.json": "{not json",
            "schemas/list.json": "[1, 2]",
            "schemas/bad-type.json": '{"type": "strng"}',
            "schemas/ok.json": '{"type": "object"}',
            "schemas/bad-minimum.json": '{"properties": {"a": {"minimum": "x"}}}',
        },
    )
    assert places(errors) == [
        (6, 19, "streams.A.topics.a.schema"),
        (7, 19, "streams.A.topics.b.schema"),
        (8, 19, "streams.A.topics.c.schema"),
        (9, 19, "streams.A.topics.d.schema"),
        (11, 19, "streams.A.topics.f.schema"),
        (12, 19, "streams.A.topics.g.schema"),
    ]
    m = [e.message for e in errors]
    assert m[0].startswith("payload schema file `schemas/missing.json` not found")
    assert m[1].startswith("payload schema `schemas/broken.json` is not valid JSON")
    assert "line 1, column 2" in m[1]
    assert m[2] == "payload schema `schemas/list.json` must be a JSON object (a JSON Schema)"
    assert m[3].startswith(
        "payload schema `schemas/bad-type.json` is not a valid JSON Schema at type"
    )
    assert m[4] == (
        "payload schema `schemas/bad-minimum.json` is not a valid JSON Schema at "
        "properties/a/minimum: 'x' is not of type 'number'"
    )
    assert m[5] == "payload schema `schemas/broken.json` is not usable (see the error above)"


def test_payload_schema_path_is_relative_to_the_topology_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "topology.yaml").write_text(
        "version: 1\nname: shop\nstreams:\n  A:\n    topics: {a: {schema: s.json}}\n"
    )
    (tmp_path / "sub" / "s.json").write_text('{"type": "object"}')
    (tmp_path / "s.json").write_text("not json")
    _, errors = check_topology(tmp_path / "sub" / "topology.yaml")
    assert errors == []


# -- environments ----------------------------------------------------------------------


def test_environment_overrides_unknown_stream_and_consumer(tmp_path: Path) -> None:
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services: {svc-a: {}}
        streams:
          EVENTS:
            topics: {a: {}}
            consumers:
              mailer: {service: svc-a}
        environments:
          dev:
            streams:
              EVNTS: {max_age: 1d}
              EVENTS:
                consumers:
                  mailr: {max_deliver: 5}
                  nobody: {max_deliver: 5}
        """,
    )
    assert places(errors) == [
        (12, 7, "environments.dev.streams.EVNTS"),
        (15, 11, "environments.dev.streams.EVENTS.consumers.mailr"),
        (16, 11, "environments.dev.streams.EVENTS.consumers.nobody"),
    ]
    assert errors[0].message == (
        "environment `dev` overrides stream `EVNTS`, which is not declared (did you mean `EVENTS`?)"
    )
    assert errors[1].message == (
        "environment `dev` overrides consumer `mailr`, which stream `EVENTS` does not declare "
        "(did you mean `mailer`?)"
    )
    assert errors[2].message.endswith("which stream `EVENTS` does not declare")


def test_bad_override_in_any_environment_is_reported_without_env(tmp_path: Path) -> None:
    text = """\
        version: 1
        name: shop
        streams:
          A: {topics: {a: {}}}
        environments:
          dev: {}
          prod:
            defaults: {stream: {max_age: 50ms}}
        """
    errors = check(tmp_path, text)
    message = one(errors, 8, 34, "environments.prod.defaults.stream.max_age")
    assert message.startswith("max_age 50ms is below the server's minimum of 100ms")
    assert check(tmp_path, text, env="dev") == []


def test_undeclared_environment(tmp_path: Path) -> None:
    text = """\
        version: 1
        name: shop
        streams:
          A: {topics: {a: {}}}
        environments:
          dev: {}
          prod: {}
        """
    message = one(check(tmp_path, text, env="prd"), 5, 1, "environments")
    assert (
        message == "environment `prd` is not declared (declared: dev, prod) (did you mean `prod`?)"
    )
    message = one(check(tmp_path, text, env="qa"), 5, 1, "environments")
    assert message == "environment `qa` is not declared (declared: dev, prod)"


def test_undeclared_environment_when_none_are_declared(tmp_path: Path) -> None:
    errors = check(tmp_path, "version: 1\nname: shop\nstreams: {A: {topics: {a: {}}}}\n", env="dev")
    message = one(errors, 1, 1, "")
    assert message == "environment `dev` is not declared (declared: none)"


# -- all at once ------------------------------------------------------------------------


def test_every_error_at_once_sorted_by_line() -> None:
    path = FIXTURES / "many-errors.yaml"
    _, errors = check_topology(path, all_environments=True)
    assert [(e.line, e.column, e.path) for e in errors] == [
        (4, 22, "defaults.stream.replicas"),
        (4, 34, "defaults.stream.max_age"),
        (7, 13, "services.svc-ocr.descripton"),
        (10, 16, "streams.EVENTS.retention"),
        (11, 23, "streams.EVENTS.duplicate_window"),
        (13, 18, "streams.EVENTS.dead_letter"),
        (15, 41, "streams.EVENTS.topics.a.b.publishers[1]"),
        (16, 7, "streams.EVENTS.topics.a.*"),
        (17, 21, "streams.EVENTS.topics.c.d.schema"),
        (19, 55, "streams.EVENTS.consumers.one.backoff"),
        (20, 22, "streams.EVENTS.consumers.two.service"),
        (20, 43, "streams.EVENTS.consumers.two.topics[1]"),
        (26, 7, "streams.OTHER.topics.a.q"),
        (28, 59, "streams.OTHER.consumers.w1.ack_policy"),
        (29, 7, "streams.OTHER.consumers.w2"),
        (29, 52, "streams.OTHER.consumers.w2.deliver_policy"),
        (30, 3, "streams.bad name"),
        (31, 23, "streams.SELF.dead_letter"),
        (33, 19, "environments.dev.streams.EVNTS"),
        (33, 62, "environments.dev.streams.EVENTS.consumers.three"),
        (33, 74, "environments.dev.streams.EVENTS.max_agee"),
    ]
    assert all(e.file == str(path) for e in errors)
    assert errors == sorted(errors)


def test_load_topology_raises_with_every_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\nname: shop\nstreams:\n  A: {retention: x, replicas: 9}\n")
    with pytest.raises(TopologyValidationError) as info:
        load_topology(path)
    errors = info.value.errors
    assert [(e.line, e.column, e.path) for e in errors] == [
        (4, 3, "streams.A"),
        (4, 18, "streams.A.retention"),
        (4, 31, "streams.A.replicas"),
    ]
    lines = str(info.value).splitlines()
    assert lines[1] == (
        f"{path}:4:18: error: streams.A.retention: 'x' is not one of limits, interest, workqueue"
    )
    assert info.value.to_json().startswith("[")


def test_load_topology_returns_the_model_when_valid() -> None:
    topology = load_topology(SHIPPED, "dev")
    assert topology.environment == "dev"
    assert all(s.replicas == 1 for s in topology.streams)


def test_consumers_as_a_string_is_one_error_not_a_traceback(tmp_path: Path) -> None:
    """Found by the property test: the stream's consumers were iterated before their type
    was checked."""
    errors = check(
        tmp_path,
        """\
        version: 1
        name: shop
        services:
          svc-a: {}
        streams:
          A:
            topics:
              a.b: {publishers: [svc-a]}
            consumers: other
        """,
    )
    assert one(errors, 9, 16, "streams.A.consumers") == "expected an object, got str ('other')"


def test_a_resolver_added_to_pyyaml_later_does_not_change_a_topology() -> None:
    # The loader keeps its own copy of the safe loader's implicit resolvers (and reads a
    # plain scalar whose first character none of them takes as a string at once): a
    # resolver that other code adds to PyYAML's loaders changes neither.
    import re

    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    saved = base.__dict__.get("yaml_implicit_resolvers")
    null = "tag:yaml.org,2002:null"
    try:
        base.add_implicit_resolver(null, re.compile("^(?:nonesuch|shop)$"), list("ns"))
        assert yaml.load("[nonesuch, shop]", Loader=base) == [None, None]  # PyYAML's changed
        text = "version: 1\nname: nonesuch\nservices: {shop: {}}\nstreams: {}\n"
        assert load_yaml(text, "t.yaml")[0] == {
            "version": 1,
            "name": "nonesuch",
            "services": {"shop": {}},
            "streams": {},
        }
    finally:
        if saved is None:
            del base.yaml_implicit_resolvers
        else:
            base.yaml_implicit_resolvers = saved


def test_a_lone_surrogate_in_a_description_is_no_traceback(tmp_path: Path) -> None:
    # PyYAML without libyaml reads "\ud800" as a lone surrogate (libyaml refuses the
    # file); the byte-length check must not raise on it.
    import yaml

    from bus_runtime.topology.checks import TopologyChecker
    from bus_runtime.topology.yaml_source import Locations

    text = 'version: 1\nname: t\nservices: {a: {}}\nstreams:\n  S:\n    description: "\\ud800"\n'
    data = yaml.load(text, Loader=yaml.SafeLoader)  # the pure-Python loader
    assert data["streams"]["S"]["description"] == "\ud800"
    checker = TopologyChecker(data, Locations("t.yaml"), tmp_path)
    checker.check_structure()  # raised UnicodeEncodeError
    assert checker.errors == []  # 3 bytes (as surrogatepass counts it): within the limit
