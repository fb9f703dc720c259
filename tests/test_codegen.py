"""`natstopo codegen`: the typed module passes `mypy --strict`, and mypy catches misuse.

mypy runs as a subprocess on the generated module and on snippets of application code.
Each line of a "bad" snippet that must fail carries `# E: CODE...`; the test asserts that
mypy reports exactly those lines with those codes, and nothing anywhere else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from review_helpers import (
    ROOT,
    SHIPPED,
    assert_one_line_error,
    run_natstopo,
    write_hard_topology,
    write_topology,
)

from bus_runtime.review.codegen import camel, generate_module, is_plain_key, upper_snake
from bus_runtime.topology.loader import load_topology
from bus_runtime.topology.model import Stream, Topology

_MYPY_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


def mypy(tmp_path: Path, files: dict[str, str]) -> tuple[int, set[tuple[str, int, str]], str]:
    """Write `files` into tmp_path and run `mypy --strict` on them: (exit, errors, output)."""
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    env = dict(os.environ, MYPYPATH=str(ROOT))  # bus_runtime, as an application sees it
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--no-color-output",
            "--hide-error-context",
            f"--cache-dir={tmp_path / '.mypy_cache'}",
            *files,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = set()
    for line in proc.stdout.splitlines():
        m = _MYPY_LINE.match(line)
        if m:
            errors.add((m["file"], int(m["line"]), m["code"]))
    return proc.returncode, errors, proc.stdout + proc.stderr


def expected_errors(name: str, text: str) -> set[tuple[str, int, str]]:
    """The `# E: CODE` marks of a snippet, as mypy would report them."""
    out = set()
    for i, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        m = re.search(r"# E: ([a-z -]+)", line)
        if m:
            out.update((name, i, code) for code in m[1].split())
    return out


@pytest.fixture(scope="module")
def shipped_module() -> str:
    return generate_module(load_topology(SHIPPED)).text


GOOD_USE = """\
from bus_types import (
    DOCUMENT_UPLOADED,
    FIRM_SYNC_COMPLETED,
    TOPICS,
    DocumentUploaded,
    TopicName,
    data_of,
    event,
)
from bus_runtime import EventPayload

doc: DocumentUploaded = {
    "document_id": "01J0000000000000000000000A",
    "client_id": "01J0000000000000000000000B",
    "source": "upload",
    "content_type": "application/pdf",
    "size_bytes": 10,
    "sha256": "0" * 64,
    "object_key": "s3://bucket/key",
}
payload: EventPayload = event(DOCUMENT_UPLOADED, doc, actor="svc-ingestion", tenant_id="t-1")
inline = event(
    "user.login",
    {"user_id": "01J0000000000000000000000C", "method": "sso", "mfa": True,
     "logged_in_at": "2026-01-31T23:59:00Z"},
    actor="svc-identity",
    tenant_id="t-1",
    trace_id="abc",
    event_id="01J0000000000000000000000D",
)
untyped = event("kg.facts_updated", {"anything": [1, 2]}, actor="svc-kg", tenant_id="t-1")
name: TopicName = FIRM_SYNC_COMPLETED
every: tuple[TopicName, ...] = TOPICS


async def handle(topic: str, received: EventPayload) -> None:
    data = data_of(DOCUMENT_UPLOADED, received)
    size: int = data["size_bytes"]
    kind = data.get("kind")
    if kind == "p60":
        print(size, kind)
    gaps = data_of("coverage.evaluated", received)["gaps"]
    print([g["box"] for g in gaps if g.get("fetchable_by") == "rpa"])
"""

BAD_USE = """\
from bus_types import DOCUMENT_UPLODED  # E: attr-defined
from bus_types import DOCUMENT_UPLOADED, DocumentUploaded, TopicName, data_of, event
from bus_runtime import EventPayload

# a misspelt key: mypy reports the missing and the extra key at the dict's first line
doc: DocumentUploaded = {  # E: typeddict-item typeddict-unknown-key
    "document_id": "01J0000000000000000000000A",
    "client_idd": "01J0000000000000000000000B",
    "source": "upload",
    "content_type": "application/pdf",
    "size_bytes": "10",  # E: typeddict-item
    "sha256": "0" * 64,
    "object_key": "s3://bucket/key",
}
odd: DocumentUploaded = {
    "document_id": "x", "client_id": "y", "content_type": "z", "size_bytes": 1,
    "sha256": "s", "object_key": "o",
    "source": "uplaod",  # E: typeddict-item
}
event("document.uploadd", odd, actor="a", tenant_id="t")  # E: call-overload
event(DOCUMENT_UPLOADED, {"title": "x"}, actor="a", tenant_id="t")  # E: call-overload
name: TopicName = "document.uplaoded"  # E: assignment


def handle(topic: str, received: EventPayload) -> None:
    data = data_of(DOCUMENT_UPLOADED, received)
    data["sizebytes"]  # E: typeddict-item
    n: str = data["size_bytes"]  # E: assignment
"""


def test_the_shipped_module_passes_mypy_strict_and_mypy_catches_misuse(
    tmp_path: Path, shipped_module: str
) -> None:
    code, errors, output = mypy(
        tmp_path, {"bus_types.py": shipped_module, "good_use.py": GOOD_USE, "bad_use.py": BAD_USE}
    )
    assert code == 1, output
    # Nothing in the generated module or in correct use: every error is a marked bad line.
    assert errors == expected_errors("bad_use.py", BAD_USE), output


def test_the_shipped_module_runs_and_says_what_the_schemas_say(shipped_module: str) -> None:
    namespace: dict[str, object] = {"__name__": "bus_types"}
    exec(compile(shipped_module, "bus_types.py", "exec", dont_inherit=True), namespace)
    topology = load_topology(SHIPPED)
    assert namespace["TOPICS"] == tuple(t.name for t in topology.topics)
    assert namespace["DOCUMENT_UPLOADED"] == "document.uploaded"
    assert namespace["FIRM_SYNC_COMPLETED"] == "firm.*.sync_completed"
    uploaded = namespace["DocumentUploaded"]
    schema = topology.topic("document.uploaded").schema
    assert schema is not None
    assert uploaded.__required_keys__ == frozenset(schema["required"])  # type: ignore[attr-defined]
    assert uploaded.__optional_keys__ == frozenset(schema["properties"]) - frozenset(  # type: ignore[attr-defined]
        schema["required"]
    )
    # enums as Literal aliases, nested arrays of objects, additionalProperties maps
    assert 'DocumentUploadedKind: TypeAlias = Literal[\n    "p60",' in shipped_module
    assert "mappings: list[DocumentNormalizedMappingsItem]" in shipped_module
    assert "fraud_prevention: dict[str, str]" in shipped_module
    # value constraints are documented, not lost
    assert "Checked at publish time: pattern `^[0-9a-f]{64}$`" in shipped_module
    # topics without a schema are named as such
    assert "- normalize.requested" in shipped_module
    # event() builds the runtime's payload
    payload = namespace["event"]("user.login", {"user_id": "u"}, actor="a", tenant_id="t")  # type: ignore[operator]
    assert type(payload).__name__ == "EventPayload" and payload.data == {"user_id": "u"}


HARD_GOOD = """\
from edge_types import XHard, ClassDef, CLASS_DEF, CLASS_DEF_2, TOPICS_2, TOPIC_2FA_ENABLED, event

value: XHard = {
    "class": "c",
    "shape": {"kind": "square", "corner": {"x": 1, "y": 2.5}},
    "tags": ["a", 1, None],
    "tree": {"children": [{"name": "leaf", "children": []}]},
    "color": "red",
    "extra": {"n": 1},
    "pair": ["a", 1],
    "either": 3,
    "my-field": None,
    "both": {"x": 1, "y": 2, "z": 3},
}
recursive: ClassDef = {"str": 1, "__x": True, "nested": {"str": 2, "__x": False}}
names = (CLASS_DEF, CLASS_DEF_2, TOPICS_2, TOPIC_2FA_ENABLED)
event("x.hard", value, actor="svc-a", tenant_id="t")
"""
HARD_BAD = """\
from edge_types import XHard, ClassDef

value: XHard = {
    "class": "c",
    "shape": {"kind": "triangle", "radius": 1},  # E: typeddict-item
    "tags": ["c"],  # E: list-item
    "tree": {"children": [{"nam": "leaf"}]},  # E: typeddict-unknown-key
    "color": "blue",  # E: typeddict-item
    "extra": {"n": "1"},  # E: dict-item
    "both": {"x": 1},  # E: typeddict-item
}
recursive: ClassDef = {"str": "1", "__x": True}  # E: typeddict-item
"""


def test_hard_schemas_pass_mypy_and_catch_misuse(tmp_path: Path) -> None:
    module = generate_module(load_topology(write_hard_topology(tmp_path)))
    code, errors, output = mypy(
        tmp_path, {"edge_types.py": module.text, "good.py": HARD_GOOD, "bad.py": HARD_BAD}
    )
    assert errors == expected_errors("bad.py", HARD_BAD), output
    assert code == 1
    text = module.text
    # keywords and non-identifiers keep their keys through the functional form
    assert '"class": str,' in text and '"my-field": NotRequired[str | None],' in text
    assert '"__x": bool,' in text  # a class body would mangle it to _ClassDef__x
    assert '"\ufb01": NotRequired[str],' in text  # NFKC would make it "fi" as an identifier
    assert '"nested": NotRequired["ClassDef"],' in text  # a forward reference, quoted
    assert 'class XHardNode(TypedDict):\n    children: NotRequired["list[XHardNode]"]' in text
    assert '"shape": XHardShapeCircle | XHardShapeSquare,' in text
    assert '"ip": NotRequired[str],' in text  # anyOf of formats on a string stays a str


def test_what_the_types_cannot_say_is_said_in_the_module_and_on_stderr(tmp_path: Path) -> None:
    path = write_hard_topology(tmp_path)
    proc = run_natstopo("codegen", str(path), "--out", str(tmp_path / "edge_types.py"))
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "edge_types.py").read_text(encoding="utf-8")
    for place, words in [
        ("/properties/pair", "`prefixItems`"),
        ("/properties/cond", "`if`/`then`/`else`"),
        ("/properties/closed", "`unevaluatedProperties`"),
        ("/properties/typo", "unknown keyword `maxLenght`"),
    ]:
        assert re.search(rf"at `{re.escape(place)}`: .*{re.escape(words)}", text), place
        assert re.search(
            rf"natstopo codegen: warning: .*at `{re.escape(place)}`: .*{re.escape(words)}",
            proc.stderr,
        ), place
    # renamed to avoid a clash: said on stderr
    assert "its constant is CLASS_DEF_2 (CLASS_DEF is taken)" in proc.stderr
    assert "its constant is TOPICS_2 (TOPICS is taken)" in proc.stderr
    # and the module imports and runs: forward references are quoted where evaluated
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import edge_types as m; print(sorted(m.ClassDef.__required_keys__))",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['__x', 'str']"


def test_one_topic_and_no_topic_need_no_overloads(tmp_path: Path) -> None:
    one = load_topology(
        write_topology(
            tmp_path,
            """\
            version: 1
            name: tiny
            streams:
              S:
                topics:
                  only.one: {}
            """,
        )
    )
    none = Topology(
        name="none",
        environment=None,
        services=(),
        streams=(Stream(name="S", subject_prefix="s", subjects=("s.>",)),),
    )
    (tmp_path / "a.json").write_text('{"required": ["a"], "properties": {"a": {"type": "string"}}}')
    typed = load_topology(
        write_topology(
            tmp_path,
            "version: 1\nname: one\nstreams:\n  S:\n    topics:\n      only.one: {schema: a.json}\n",
            "typed.yaml",
        )
    )
    files = {
        "one_types.py": generate_module(one).text,
        "typed_types.py": generate_module(typed).text,
        "none_types.py": generate_module(none).text,
    }
    assert 'return cast("OnlyOne", payload.data)' in files["typed_types.py"]
    assert "@overload" not in files["one_types.py"]
    assert "TopicName: TypeAlias = Never" in files["none_types.py"]
    code, errors, output = mypy(tmp_path, files)
    assert (code, errors) == (0, set()), output


def test_check_exits_0_when_current_2_when_stale_or_missing_1_on_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "bus_types.py"
    assert run_natstopo("codegen", str(SHIPPED), "--out", str(out)).returncode == 0
    current = run_natstopo("codegen", str(SHIPPED), "--out", str(out), "--check")
    assert current.returncode == 0, current.stderr
    out.write_text(out.read_text(encoding="utf-8").replace("user.login", "user.logon"))
    stale = run_natstopo("codegen", str(SHIPPED), "--out", str(out), "--check")
    assert stale.returncode == 2
    assert f"{out} is out of date: run `natstopo codegen {SHIPPED} --out {out}`" in stale.stderr
    missing = run_natstopo("codegen", str(SHIPPED), "--out", str(tmp_path / "nope.py"), "--check")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "nope.py").exists()

    bad = write_topology(tmp_path, "version: 1\nname: x\nstreams:\n  S:\n    retention: workque\n")
    invalid = run_natstopo("codegen", str(bad), "--out", str(out), "--check")
    assert invalid.returncode == 1 and "Traceback" not in invalid.stderr
    assert re.search(rf"^{re.escape(str(bad))}:5:16: error: ", invalid.stderr, re.M), invalid.stderr
    assert_one_line_error(run_natstopo("codegen", str(SHIPPED), "--out", str(tmp_path)))
    assert_one_line_error(
        run_natstopo("codegen", str(SHIPPED), "--out", str(tmp_path / "no/dir.py"))
    )


def test_the_module_does_not_depend_on_where_it_is_written_or_read_from(tmp_path: Path) -> None:
    a = run_natstopo("codegen", "topology/topology.yaml", "--out", str(tmp_path / "a.py"))
    b = run_natstopo("codegen", str(SHIPPED), "--out", str(tmp_path / "b.py"), cwd=tmp_path)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert (tmp_path / "a.py").read_bytes() == (tmp_path / "b.py").read_bytes()
    # a changed description changes the module; a changed retention (no type) does not
    text = SHIPPED.read_text(encoding="utf-8")
    shutil.copytree(SHIPPED.parent / "schemas", tmp_path / "schemas")
    for old, new, changes in [
        ("retention: interest", "retention: limits", False),
        ("A user signed in.", "A user signed on.", True),
    ]:
        variant = write_topology(tmp_path, text.replace(old, new, 1), "variant.yaml")
        proc = run_natstopo("codegen", str(variant), "--out", str(tmp_path / "a.py"), "--check")
        assert proc.returncode == (2 if changes else 0), (old, proc.stderr)


BREAKING = {
    "empty.json": {},
    "obj.json": {"type": "object"},
    "arr.json": {"type": "array", "items": {"type": "string"}},
    "closed.json": {"type": "object", "additionalProperties": False},
    "misc.json": {
        "type": "object",
        "description": 'Ends with """triple""" quotes and a backslash \\',
        "properties": {
            "TypedDict": {"type": "string"},
            "int": {"type": "string"},
            "n": {"enum": [1, True, "1", None]},
            "o": {"type": ["object", "null"], "properties": {"a": {"type": "integer"}}},
            "again": {"$ref": "#/properties/o"},
            "k": {"const": {"a": 1}},
            "gone": False,
        },
    },
}
BREAKING_TOPOLOGY = r"""
version: 1
name: brk
services: {svc: {}}
streams:
  S:
    topics:
      none: {publishers: [svc], schema: schemas/empty.json}
      any: {publishers: [svc], schema: schemas/obj.json}
      a-b: {publishers: [svc], schema: schemas/arr.json}
      a_b: {publishers: [svc], schema: schemas/closed.json}
      misc: {publishers: [svc], schema: schemas/misc.json, description: 'said "hi" \ '}
"""
BREAKING_USE = """\
from brk_types import (
    A_B,
    A_B_2,
    AB,
    AB2,
    Any2,
    Misc,
    MiscN,
    MiscO,
    None2,
    event,
)

anything: None2 = {"x": [1]}
obj: Any2 = {}
strings: AB = ["a"]
closed: AB2 = {}
misc: Misc = {"TypedDict": "t", "int": "i", "n": True, "o": None, "again": {"a": 1}}
n: MiscN = "1"
same: MiscO | None = misc["again"]
event(A_B, ["a"], actor="svc", tenant_id="t")
event(A_B_2, {}, actor="svc", tenant_id="t")
bad: Misc = {"n": 2}  # E: typeddict-item
"""


def test_names_that_clash_and_schemas_that_are_no_objects(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    for name, schema in BREAKING.items():
        (tmp_path / "schemas" / name).write_text(json.dumps(schema), encoding="utf-8")
    module = generate_module(load_topology(write_topology(tmp_path, BREAKING_TOPOLOGY)))
    warnings = "\n".join(module.warnings)
    for words in [
        "its payload class is None2 (None is taken)",
        "its payload class is Any2 (Any is taken)",
        "its constant is A_B_2 (A_B is taken)",
        "topic `a-b` (schemas/arr.json) at `/`: the payload schema allows more than a JSON object",
        "at `/properties/k`: a `const` that a Literal cannot hold",
        "at `/properties/gone`: a property that must be absent is left out",
    ]:
        assert words in warnings, words
    assert "class MiscO2" not in module.text  # the `$ref` to a property reuses its class
    assert 'MiscN: TypeAlias = Literal[1, True, "1"]' in module.text
    _, errors, output = mypy(tmp_path, {"brk_types.py": module.text, "use.py": BREAKING_USE})
    assert errors == expected_errors("use.py", BREAKING_USE), output


@pytest.mark.parametrize("which", ["shipped", "hard"])
def test_generated_code_is_lint_clean_and_left_alone_by_the_formatter(
    which: str, tmp_path: Path, shipped_module: str
) -> None:
    text = (
        shipped_module
        if which == "shipped"
        else generate_module(load_topology(write_hard_topology(tmp_path))).text
    )
    module = tmp_path / "bus_types.py"
    module.write_text(text, encoding="utf-8")
    ruff = [sys.executable, "-m", "ruff"]
    lint = subprocess.run(
        [*ruff, "check", "--isolated", "--select", "E,F,W,I,UP,B", "--ignore", "E501", str(module)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout
    fmt = subprocess.run(
        [*ruff, "format", "--isolated", "--check", str(module)], capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.parametrize(
    ("name", "const", "cls"),
    [
        ("document.ocr_completed", "DOCUMENT_OCR_COMPLETED", "DocumentOcrCompleted"),
        ("firm.*.sync_completed", "FIRM_SYNC_COMPLETED", "FirmSyncCompleted"),
        ("hmrc.SA100-submitted", "HMRC_SA100_SUBMITTED", "HmrcSA100Submitted"),
        ("naïve.event", "NA_VE_EVENT", "NaVeEvent"),
    ],
)
def test_names(name: str, const: str, cls: str) -> None:
    assert (upper_snake(name), camel(name)) == (const, cls)


def test_plain_keys() -> None:
    assert is_plain_key("size_bytes")
    assert not any(map(is_plain_key, ["class", "my-field", "__x", "\ufb01", "2fa", ""]))


def test_applications_importing_bus_runtime_load_none_of_review() -> None:
    code = (
        "import sys, bus_runtime; bus_runtime.EventPayload; "
        "print([m for m in sys.modules if '.review' in m or m.endswith('cli.docs')])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
