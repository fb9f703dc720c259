"""The semantic checks of a topology, split by subject; `TopologyChecker` runs them all.

1. `schema_messages`: the JSON Schema;
2. `references`: names that must point at something declared;
3. `streams` and `consumers`: the effective settings of one environment, built into the model.
"""

from __future__ import annotations

from pathlib import Path

from ..._errors import unique_sorted
from ..model import Service, Stream, Topology
from ..subjects import SubjectIndex
from ..yaml_source import Path as KeyPath
from .base import Setting, did_you_mean
from .schema_messages import SchemaMessages
from .streams import StreamChecks


class TopologyChecker(SchemaMessages, StreamChecks):
    """Every check; `build(env)` gives the model of one environment."""

    def build(self, env: str | None) -> Topology | None:
        """The effective topology for `env` (errors go to self.errors; None if unusable)."""
        streams_data = self.streams()
        services = tuple(
            Service(name, (v or {}).get("description"), (v or {}).get("owner"))
            for name, v in self.mapping("services").items()
            if isinstance(v, dict) or v is None
        )
        built: list[Stream] = []
        dl_sources: dict[str, list[str]] = {}
        settings: dict[str, dict[str, Setting]] = {}
        for sname in streams_data:
            ss = self._layer(
                env, "stream", ("streams", sname), ("environments", env or "", "streams", sname)
            )
            settings[sname] = ss
            dl = self._value(ss, "dead_letter")
            if isinstance(dl, str):
                where = self._where(ss.get("dead_letter"), ("streams", sname))
                if dl == sname:
                    self.err(where, f"stream `{sname}` cannot be its own dead_letter stream")
                elif dl not in streams_data:
                    self.err(
                        where,
                        f"dead_letter `{dl}` names no declared stream"
                        + did_you_mean(dl, streams_data),
                    )
                else:
                    dl_sources.setdefault(dl, []).append(sname)
        layout = tuple(
            (
                sname,
                self._value(settings[sname], "subject_prefix"),
                tuple(dl_sources.get(sname, ())),
            )
            for sname in streams_data
        )
        # Subject overlap is a property of the layout: checked once per distinct layout.
        check_subjects = layout not in self._layouts_checked
        self._layouts_checked.add(layout)
        index: SubjectIndex[tuple[str, str, KeyPath]] = SubjectIndex()
        for sname, s in streams_data.items():
            stream = self._build_stream(
                env, sname, s, settings, dl_sources.get(sname, []), index, check_subjects
            )
            if stream is not None:
                built.append(stream)
        return Topology(
            name=str(self.data.get("name", "")),
            environment=env,
            services=services,
            streams=tuple(built),
            environments=tuple(self.environment_names()),
            warnings=tuple(unique_sorted(self.warnings)),
            description=self.data.get("description")
            if isinstance(self.data.get("description"), str)
            else None,
            source=Path(self.locs.file),
        )


__all__ = ["TopologyChecker"]
