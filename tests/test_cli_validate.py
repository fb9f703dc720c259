"""`natstopo validate`: output formats, exit codes, and never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from bus_runtime.cli.main import main
from bus_runtime.topology.loader import load_topology

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "topology" / "topology.yaml"
MANY_ERRORS = Path(__file__).resolve().parent / "topologies" / "many-errors.yaml"

BAD = dedent(
    """\
    version: 1
    name: shop
    streams:
      A:
        retention: workque
        topics: {a: {}}
      B:
        replicas: 9
        topics: {a: {}}
    """
)
LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): error: (?P<rest>.+)$")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m bus_runtime ...` in a subprocess, as a user or CI runs it."""
    return subprocess.run(
        [sys.executable, "-m", "bus_runtime", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_valid_file_exit_0_and_one_line_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SHIPPED)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    t = load_topology(SHIPPED)
    assert out[0].startswith(f"{SHIPPED}: valid: topology `tax-agent` (base and ")
    assert (
        f"{len(t.streams)} streams, {len(t.topics)} topics, {len(t.consumers)} consumers, "
        f"{len(t.services)} services"
    ) in out[0]
    assert f"fingerprint {t.fingerprint}" in out[0]


def test_valid_file_with_env(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SHIPPED), "--env", "dev"]) == 0
    out = capsys.readouterr().out
    assert "(env dev)" in out
    assert f"fingerprint {load_topology(SHIPPED, 'dev').fingerprint}" in out


def test_default_file_from_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    monkeypatch.setenv("BUS_TOPOLOGY", str(bad))
    assert main(["validate"]) == 1
    assert f"{bad}:5:16: error:" in capsys.readouterr().err


def test_default_file_is_the_shipped_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BUS_TOPOLOGY", raising=False)
    monkeypatch.chdir(REPO)
    assert main(["validate"]) == 0
    assert capsys.readouterr().out.startswith("topology/topology.yaml: valid:")


def test_invalid_file_exit_1_every_error_sorted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["validate", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines[-1] == f"{bad}: 3 errors"
    parsed = [LINE.match(line) for line in lines[:-1]]
    assert all(parsed), lines
    assert [(m["file"], int(m["line"]), int(m["col"])) for m in parsed if m] == [
        (str(bad), 5, 16),
        (str(bad), 8, 15),
        (str(bad), 9, 14),
    ]
    assert lines[0] == (
        f"{bad}:5:16: error: streams.A.retention: 'workque' is not one of limits, interest, "
        "workqueue (did you mean `workqueue`?)"
    )
    assert lines[1].endswith("streams.B.replicas: `replicas` must be between 1 and 5; got 9")
    assert "streams.B.topics.a: topic `a` is also declared in stream `A`" in lines[2]


def test_one_error_is_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("")
    assert main(["validate", str(bad)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"{bad}: 1 error"


def test_json_format_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["validate", str(bad), "--format", "json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False
    assert "summary" not in out
    errors = out["errors"]
    assert [(e["file"], e["line"], e["column"], e["path"]) for e in errors] == [
        (str(bad), 5, 16, "streams.A.retention"),
        (str(bad), 8, 15, "streams.B.replicas"),
        (str(bad), 9, 14, "streams.B.topics.a"),
    ]
    for e in errors:
        assert {"file", "line", "column", "path", "message"} <= set(e)
        assert isinstance(e["line"], int) and isinstance(e["column"], int)
    assert errors[0]["message"] == (
        "'workque' is not one of limits, interest, workqueue (did you mean `workqueue`?)"
    )


def test_json_format_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SHIPPED), "--format", "json", "--env", "prod"]) == 0
    out = json.loads(capsys.readouterr().out)
    t = load_topology(SHIPPED, "prod")
    assert out["valid"] is True
    assert out["errors"] == []
    assert out["summary"] == {
        "name": "tax-agent",
        "environment": "prod",
        "streams": len(t.streams),
        "topics": len(t.topics),
        "consumers": len(t.consumers),
        "services": len(t.services),
        "fingerprint": t.fingerprint,
    }


def test_json_format_many_errors_in_line_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(MANY_ERRORS), "--format", "json"]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert len(errors) == 21
    keys = [(e["line"], e["column"]) for e in errors]
    assert keys == sorted(keys)


def test_undeclared_env_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SHIPPED), "--env", "stagin"]) == 1
    err = capsys.readouterr().err
    assert "environment `stagin` is not declared" in err
    assert "(did you mean `staging`?)" in err


def test_missing_file_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["validate", str(missing)]) == 1
    assert f"{missing}:0:0: error: file not found" in capsys.readouterr().err


# -- as a user runs it: a subprocess, never a traceback ----------------------------------


@pytest.mark.parametrize(
    ("name", "content", "extra"),
    [
        ("empty.yaml", b"", []),
        ("list.yaml", b"- a\n- b\n", ["--format", "json"]),
        ("syntax.yaml", b"version: 1\nname: x\nstreams: [a\n", []),
        ("tagged.yaml", b"version: 1\nname: x\nstreams: {}\nx: !!timestamp abc\n", []),
        ("binary.yaml", bytes(range(256)), []),
        ("latin1.yaml", "version: 1\nname: caf\xe9\n".encode("latin-1"), ["--format", "json"]),
        ("alias-loop.yaml", b"version: 1\nname: x\nstreams: &a\n  A: *a\n", []),
        ("several.yaml", b"version: 1\n---\nversion: 1\n", ["--env", "dev"]),
        ("bad.yaml", BAD.encode(), ["--env", "dev"]),
    ],
)
def test_subprocess_invalid_input_exit_1_without_traceback(
    tmp_path: Path, name: str, content: bytes, extra: list[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = run_cli("validate", str(path), *extra)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    if extra == ["--format", "json"]:
        assert json.loads(result.stdout)["valid"] is False
    else:
        assert re.search(rf"^{re.escape(str(path))}:\d+:\d+: error: ", result.stderr, re.M)


def test_subprocess_directory_and_missing_file(tmp_path: Path) -> None:
    for target in (tmp_path, tmp_path / "missing.yaml"):
        result = run_cli("validate", str(target))
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert f"{target}:0:0: error:" in result.stderr


def test_subprocess_valid_shipped_topology() -> None:
    env = {k: v for k, v in os.environ.items() if k != "BUS_TOPOLOGY"}
    result = subprocess.run(
        [sys.executable, "-m", "bus_runtime", "validate"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("topology/topology.yaml: valid: topology `tax-agent`")
    assert "Traceback" not in result.stderr
