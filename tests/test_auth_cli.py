"""`natstopo auth render|show`: the files it writes, what it prints, and what it never prints."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bus_runtime import load_topology
from bus_runtime.cli.main import main
from bus_runtime.security import read_env_file, service_permissions

REPO = Path(__file__).resolve().parent.parent
SHIPPED = str(REPO / "topology" / "topology.yaml")


def _secrets(out: Path) -> list[str]:
    return [read_env_file(p)["NATS_PASSWORD"] for p in sorted(out.glob("*.env"))]


def test_render_writes_every_file_private_and_prints_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "auth"
    argv = ["auth", "render", SHIPPED, "--env", "dev", "--out", str(out), "--bcrypt-cost", "4"]
    assert main(argv) == 0
    first = capsys.readouterr()
    topology = load_topology(SHIPPED, "dev")
    names = {f"{s.name}.env" for s in topology.services} | {
        "admin.env",
        "dlq-operator.env",
        "monitor.env",
    }
    assert {p.name for p in out.iterdir()} == names | {"auth.conf", "identities.json"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out.iterdir())
    assert (
        f"wrote {out / 'auth.conf'}" in first.out and "new credentials: svc-identity" in first.out
    )
    assert main([*argv, "--rotate", "svc-ocr", "--server", "nats://127.0.0.1:4222"]) == 0
    second = capsys.readouterr()
    assert "rotated (the previous credential stays valid until --retire): svc-ocr" in second.out
    assert "still accepting an older credential: svc-ocr" in second.out
    assert main([*argv, "--retire", "svc-ocr"]) == 0
    third = capsys.readouterr()
    secrets = _secrets(out)
    printed = "".join(x.out + x.err for x in (first, second, third))
    assert not [s for s in secrets if s in printed]
    assert not [s for s in secrets if s in (out / "auth.conf").read_text()]


def test_render_errors_are_one_line_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "auth"
    base = ["auth", "render", SHIPPED, "--env", "dev", "--out", str(out), "--bcrypt-cost", "4"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--rotate", "svc-nobody"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("natstopo auth: error: `svc-nobody` is not an identity")
    assert len(err.strip().splitlines()) == 1
    assert main([*base, "--mode", "nkey"]) == 1
    assert "holds password credentials" in capsys.readouterr().err


def test_render_without_the_auth_extra_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "bcrypt", None)  # `import bcrypt` raises ImportError
    assert main(["auth", "render", SHIPPED, "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert err == (
        "natstopo auth: error: password credentials need the bcrypt package: "
        "pip install 'natstopo[auth]'\n"
    )
    assert not (tmp_path / "a").exists()
    monkeypatch.setitem(sys.modules, "nkeys", None)
    assert main(["auth", "render", SHIPPED, "--out", str(tmp_path / "b"), "--mode", "nkey"]) == 1
    assert "nkey credentials need the nkeys package" in capsys.readouterr().err


def test_the_runtime_side_needs_neither_bcrypt_nor_nkeys() -> None:
    code = (
        "import sys\n"
        "sys.modules['bcrypt'] = None\n"
        "sys.modules['nkeys'] = None\n"
        "from bus_runtime.security import connect_kwargs, permission_violation, service_permissions\n"
        "from bus_runtime import load_topology\n"
        f"t = load_topology({SHIPPED!r}, 'dev')\n"
        "assert service_permissions(t, 'svc-ocr').inbox_prefix == '_INBOX.svc-ocr'\n"
        "assert connect_kwargs('svc-ocr', env={})['inbox_prefix'] == '_INBOX.svc-ocr'\n"
        "from bus_runtime.cli.main import main\n"
        "assert main(['auth', 'show', " + repr(SHIPPED) + ", '--service', 'svc-ocr']) == 0\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_show_prints_the_permissions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["auth", "show", SHIPPED, "--service", "svc-ocr", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    p = service_permissions(load_topology(SHIPPED), "svc-ocr")
    got = data["svc-ocr"]
    assert {k: got[k] for k in ("publish", "subscribe")} == p.to_dict()
    assert (got["inbox_prefix"], got["account"], got["api_prefix"]) == (
        "_INBOX.svc-ocr",
        "tax-agent-svc-ocr",
        "$NATSTOPO.API",
    )
    assert [i["local"] for i in got["imports"]] == got["publish"]
    assert {
        "subject": "$JS.API.CONSUMER.MSG.NEXT.TAX_AGENT_JOBS.ocr-worker",
        "local": "$NATSTOPO.API.CONSUMER.MSG.NEXT.TAX_AGENT_JOBS.ocr-worker",
        "stream_response": True,
        "response_threshold": None,
    } in got["imports"]
    assert {
        i["response_threshold"] for i in got["imports"] if i["local"].startswith("$JS.ACK.")
    } == {"5s"}
    assert main(["auth", "show", SHIPPED, "--service", "svc-ocr"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(
        "svc-ocr (account tax-agent-svc-ocr, inbox _INBOX.svc-ocr, JetStream API $NATSTOPO.API)\n"
        "  publish    jobs.extract.requested\n"
    )
    assert "  imports    each publish subject from account tax-agent " in text
    assert main(["auth", "show", SHIPPED, "--service", "nobody"]) == 1
    assert "unknown identity: nobody" in capsys.readouterr().err


def _render(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["auth", "render", str(SHIPPED), "--bcrypt-cost", "4", *argv])
    captured = capsys.readouterr()
    return code, captured.err


def test_render_refuses_what_would_reuse_replace_or_break_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = tmp_path / "dev"
    assert _render(capsys, "--env", "dev", "--out", str(dev))[0] == 0
    before = read_env_file(dev / "svc-ocr.env")["NATS_PASSWORD"]
    # another environment into the same folder: would relabel dev's passwords as prod's
    code, err = _render(capsys, "--env", "prod", "--out", str(dev))
    assert code != 0 and "into a folder of its own" in err, err
    # the state file lost: every credential would be replaced
    state = (dev / "identities.json").read_text()
    (dev / "identities.json").unlink()
    code, err = _render(capsys, "--env", "dev", "--out", str(dev))
    assert code != 0 and "no identities.json" in err, err
    (dev / "identities.json").write_text(state)
    assert read_env_file(dev / "svc-ocr.env")["NATS_PASSWORD"] == before  # nothing replaced
    # a domain that is not one subject token would break the server's config
    for domain in ("x.>", "a b", 'x"y', ">"):
        code, err = _render(capsys, "--env", "dev", "--out", str(dev), "--domain", domain)
        assert code != 0 and "one subject token" in err, (domain, err)
    # an --out that cannot be a folder: one line, no traceback
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "below"):
        code, err = _render(capsys, "--env", "dev", "--out", str(out))
        assert code != 0 and "cannot write the credentials folder" in err, err
        assert "Traceback" not in err
    # a loose existing folder is made 0700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert _render(capsys, "--env", "dev", "--out", str(loose))[0] == 0
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
