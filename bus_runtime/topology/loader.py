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
import os
from collections.abc import Iterator
from difflib import get_close_matches
from pathlib import Path

from .._errors import TopologyError, TopologyValidationError, error_key, unique_sorted
from .checks import TopologyChecker
from .model import Topology
from .schema import topology_schema
from .yaml_source import Locations, load_yaml

DEFAULT_TOPOLOGY = "topology/topology.yaml"
TOPOLOGY_ENV_VAR = "BUS_TOPOLOGY"

__all__ = [
    "DEFAULT_TOPOLOGY",
    "TOPOLOGY_ENV_VAR",
    "check_topology",
    "default_topology_path",
    "gc_paused",
    "load_every_environment",
    "load_topology",
    "parse_topology",
    "topology_schema",
]


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
        return _parse(text, file, base_dir, environment, all_environments, None)


def load_every_environment(
    path: str | os.PathLike[str], places: list[Locations] | None = None
) -> tuple[dict[str | None, Topology], list[TopologyError]]:
    """The base model (key None) and one model per declared environment, from one parse.

    What `natstopo diff` compares: the YAML, the schema check and the references are done
    once; only the effective settings are built per environment. Empty when invalid.
    `places`, when given, receives the file's key places (where each setting is written).
    """
    file = str(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, [TopologyError(file, 0, 0, "", "file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [TopologyError(file, 0, 0, "", f"cannot read the file: {exc}")]
    models: dict[str | None, Topology] = {}
    with _gc_paused():
        _, errors = _parse(text, file, Path(file).parent, None, True, models, places)
    return ({} if errors else models), errors


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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


_gc_paused = gc_paused  # the name benchmarks/validate_bench.py uses


def _parse(
    text: str,
    file: str,
    base_dir: Path | None,
    environment: str | None,
    all_environments: bool,
    models: dict[str | None, Topology] | None,
    places: list[Locations] | None = None,
) -> tuple[Topology | None, list[TopologyError]]:
    data, locs, errors = load_yaml(text, file)
    if places is not None:
        places.append(locs)
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
    checker = TopologyChecker(data, locs, base_dir or Path(file).parent)
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
            base = set(map(error_key, checker.errors))
            base_warnings = set(map(error_key, checker.warnings))
            for env in envs:
                start, wstart = len(checker.errors), len(checker.warnings)
                built = checker.build(env)
                if models is not None and built is not None:
                    models[env] = built
                checker.errors[start:] = [
                    _in_environment(e, env)
                    for e in checker.errors[start:]
                    if error_key(e) not in base
                ]
                checker.warnings[wstart:] = [
                    _in_environment(w, env)
                    for w in checker.warnings[wstart:]
                    if error_key(w) not in base_warnings
                ]
            if topology is not None:
                # The base model reports what any environment would warn about too.
                warnings = tuple(unique_sorted(checker.warnings))
                topology = dataclasses.replace(topology, warnings=warnings)
    if models is not None and topology is not None:
        models[None] = topology
    all_errors = unique_sorted(errors + checker.errors)
    return (None if all_errors else topology), all_errors


def _in_environment(error: TopologyError, env: str) -> TopologyError:
    """An error that only `env`'s overrides cause names the environment, unless its path does.

    (A base `duplicate_window: 2m` is fine until dev sets `max_age: 1m`: the error is at
    the base key, and without this the reader would look for a 1m max_age there.)
    """
    if error.path == f"environments.{env}" or error.path.startswith(f"environments.{env}."):
        return error
    return dataclasses.replace(error, message=f"{error.message} (in environment `{env}`)")
