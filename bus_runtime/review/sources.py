"""Where a reviewed topology comes from: a file, or `REF:path` read from git.

For `REF:path` the topology file's whole folder is taken from that commit (payload
schemas live below it: the validator refuses schema paths leaving the folder), written to
a temporary folder, and loaded from there, so BASE and HEAD each use their own schemas.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .._errors import BusError


class SourceError(BusError):
    """A topology version could not be read (missing file, unknown git ref)."""


@dataclass(frozen=True)
class Source:
    """One side of a review: what the user wrote, and the file to load."""

    label: str
    path: Path
    display: str  # the path errors and annotations name (repository-relative for REF:path)


def _git(args: list[str], cwd: Path) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False, timeout=60)
    except FileNotFoundError as exc:
        raise SourceError("git is not installed: `REF:path` needs it") from exc
    if done.returncode != 0:
        first = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["failed"])[0]
        raise SourceError(f"git {' '.join(args[:2])}: {first}")
    return done.stdout


@contextlib.contextmanager
def open_source(spec: str, cwd: Path | None = None) -> Iterator[Source]:
    """The topology that `spec` names, as a file to load, cleaned up afterwards.

    An existing file wins; otherwise `REF:path` with a path relative to the repository's
    top (or to the current folder when it starts with `./`), like `git show`.

    Raises:
        SourceError: Neither a file nor a readable `REF:path`.
    """
    here = Path(cwd or os.getcwd())
    if (here / spec).is_file():
        yield Source(spec, here / spec, _from_top(here / spec) or spec)
        return
    if (here / spec).is_dir():
        raise SourceError(f"{spec}: is a folder: name the topology file in it")
    ref, sep, rel = spec.partition(":")
    if not sep or not ref or not rel:
        raise SourceError(f"{spec}: no such file (and not of the form REF:path)")
    top = Path(_git(["rev-parse", "--show-toplevel"], here).decode().strip())
    if rel.startswith(("./", "../")):
        prefix = _git(["rev-parse", "--show-prefix"], here).decode().strip()
        rel = os.path.normpath(str(PurePosixPath(prefix) / rel))
        if rel.startswith(".."):
            raise SourceError(f"{spec}: `{rel}` is outside the repository")
    rel = str(PurePosixPath(rel))
    kind = _git(["cat-file", "-t", f"{ref}:{rel}"], top).decode().strip()
    if kind != "blob":
        raise SourceError(f"{spec}: `{rel}` at `{ref}` is a {kind}, not a file")
    folder = str(PurePosixPath(rel).parent)
    archive = _git(["archive", "--format=tar", ref, "--", folder], top)
    with tempfile.TemporaryDirectory(prefix="natstopo-diff-") as tmp:
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(tmp, filter="data")
        except tarfile.TarError as exc:
            # The data filter refuses links leaving the folder, absolute paths and devices.
            raise SourceError(f"{spec}: cannot read `{folder}` at `{ref}` safely: {exc}") from exc
        yield Source(spec, Path(tmp) / rel, rel)


def _from_top(path: Path) -> str | None:
    """`path` relative to its git repository's top (what annotations name), if in one."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=path.resolve().parent,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    try:
        return str(PurePosixPath(path.resolve().relative_to(Path(done.stdout.strip()).resolve())))
    except ValueError:
        return None
