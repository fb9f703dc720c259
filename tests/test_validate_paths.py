"""Payload schema paths stay inside the topology's folder: a pull request cannot make the
check read (and echo) other files of the machine that runs it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from bus_runtime import check_topology


def test_schema_paths_leaving_the_folder_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"type": "object"}))
    folder = tmp_path / "topology"
    (folder / "schemas").mkdir(parents=True)
    (folder / "schemas" / "ok.json").write_text(json.dumps({"type": "object"}))
    path = folder / "topology.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            name: t
            services: {{svc-a: {{}}}}
            streams:
              S:
                topics:
                  a: {{publishers: [svc-a], schema: ../secret.json}}
                  b: {{publishers: [svc-a], schema: {outside}}}
                  c: {{publishers: [svc-a], schema: schemas/../schemas/ok.json}}
            """
        )
    )
    topology, errors = check_topology(path)
    assert topology is None
    assert [(e.line, e.column, e.path) for e in errors] == [
        (7, 40, "streams.S.topics.a.schema"),
        (8, 40, "streams.S.topics.b.schema"),
    ]
    assert all("leaves the topology's folder (topology/)" in e.message for e in errors)
