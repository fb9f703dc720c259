"""The metadata marks on the assets natstopo manages, and how user metadata merges with them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from .plan import FieldChange

MARK_TOPOLOGY = "natstopo.topology"
MARK_FINGERPRINT = "natstopo.fingerprint"
MARK_SERVICE = "natstopo.service"
RESERVED_PREFIXES = ("natstopo.", "_nats.")


def user_metadata(md: Any) -> dict[str, str]:
    if not isinstance(md, dict):
        return {}
    return {k: v for k, v in md.items() if not k.startswith(RESERVED_PREFIXES)}


def asset_fingerprint(config: dict[str, Any]) -> str:
    """A short stable hash of an asset's config (without its metadata marks)."""
    cfg = {k: v for k, v in config.items() if k != "metadata"}
    cfg["metadata"] = user_metadata(config.get("metadata"))
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def metadata_fields(
    want: Sequence[tuple[str, str]], have_md: Any, marks: dict[str, str]
) -> list[FieldChange]:
    # User metadata the topology does not declare is drift like any other field: apply
    # removes it (keys natstopo and the server reserve are not the user's).
    out: list[FieldChange] = []
    have = user_metadata(have_md)
    wanted = dict(want)
    for key in sorted(set(wanted) | set(have)):
        if wanted.get(key) != have.get(key):
            out.append(FieldChange(f"metadata.{key}", have.get(key), wanted.get(key)))
    live = have_md if isinstance(have_md, dict) else {}
    # The marks that decide management; the fingerprint is informational and not compared.
    for key, value in marks.items():
        if key != MARK_FINGERPRINT and live.get(key) != value:
            out.append(FieldChange(f"metadata.{key}", live.get(key), value))
    return out


def merged_metadata(
    live_md: Any, want: Sequence[tuple[str, str]], marks: dict[str, str]
) -> dict[str, str]:
    md = dict(live_md) if isinstance(live_md, dict) else {}
    md = {k: v for k, v in md.items() if k.startswith(RESERVED_PREFIXES)}
    md.update(dict(want))
    md.update(marks)
    return md


def owner(cfg: dict[str, Any]) -> str | None:
    md = cfg.get("metadata")
    if isinstance(md, dict):
        owner = md.get(MARK_TOPOLOGY)
        return owner if isinstance(owner, str) else None
    return None
