"""Check 3a: one stream's effective settings, topics, subjects and limits."""

from __future__ import annotations

from typing import Any

from ..model import (
    STREAM_FIELD_TO_API,
    Consumer,
    Location,
    Stream,
    Topic,
)
from ..subjects import SubjectIndex
from ..units import MS, SECOND, format_duration
from ..yaml_source import Path as KeyPath
from .base import (
    BUILTIN_STREAM,
    STREAM_SETTINGS,
    Setting,
)
from .consumers import ConsumerChecks

# Stream limits the server rewrites from 0 to -1, "no limit" (tests/conformance).
ZERO_MEANS_UNLIMITED = (
    "max_bytes",
    "max_msgs",
    "max_msgs_per_subject",
    "max_msg_size",
    "max_consumers",
)


class StreamChecks(ConsumerChecks):
    """Builds a stream of one environment, with its consumers."""

    def _build_topics(
        self, spath: KeyPath, sname: str, s: dict[str, Any], prefix: str
    ) -> tuple[list[Topic], list[tuple[str, str, KeyPath]]]:
        """A stream's topics and their subjects (subject, what, where)."""
        topics: list[Topic] = []
        subjects: list[tuple[str, str, KeyPath]] = []
        places = self.locs.key_places((*spath, "topics"))
        for tname, t in self._topics(s).items():
            tpath: KeyPath = (*spath, "topics", tname)
            if tpath in self.bad_paths:
                continue
            t = t if isinstance(t, dict) else {}
            subject = f"{prefix}.{tname}"
            schema_file = t.get("schema") if isinstance(t.get("schema"), str) else None
            schema, digest = (None, None)
            if schema_file:
                schema, digest = self._schemas.get(schema_file, (None, None))
            pubs = t.get("publishers")
            place = places.get(tname)
            line, col = place if place is not None else self.locs.of_key(tpath)
            topics.append(
                Topic(
                    name=tname,
                    stream=sname,
                    subject=subject,
                    description=t.get("description")
                    if isinstance(t.get("description"), str)
                    else None,
                    publishers=tuple(p for p in pubs if isinstance(p, str))
                    if isinstance(pubs, list)
                    else (),
                    schema_file=schema_file,
                    schema=schema,
                    schema_digest=digest,
                    deprecated=bool(t.get("deprecated", False)),
                    location=Location(self.locs.file, line, col),
                )
            )
            subjects.append((subject, f"topic `{tname}`", tpath))
        return topics, subjects

    def _build_stream(
        self,
        env: str | None,
        sname: str,
        s: dict[str, Any],
        settings: dict[str, dict[str, Setting]],
        dl_sources: list[str],
        index: SubjectIndex[tuple[str, str, KeyPath]],
        check_subjects: bool = True,
    ) -> Stream | None:
        spath: KeyPath = ("streams", sname)
        if spath in self.bad_paths:
            return None
        ss = settings[sname]
        values = self._values(ss, STREAM_SETTINGS)
        if values["duplicate_window"] == 0:
            values["duplicate_window"] = None  # the server reads 0 as "its default" (2m)
        for key in ZERO_MEANS_UNLIMITED:
            if values[key] == 0:
                values[key] = -1  # the server stores 0 as -1 (measured): say it its way
        prefix = values["subject_prefix"] if isinstance(values["subject_prefix"], str) else sname
        # -- topics and subjects (the same in every environment with this prefix)
        built = self._topics_built.get((sname, prefix))
        if built is None:
            built = self._build_topics(spath, sname, s, prefix)
            self._topics_built[(sname, prefix)] = built
        topics: list[Topic] = list(built[0])
        subjects: list[tuple[str, str, KeyPath]] = list(built[1])  # (subject, what, where)
        for origin in dl_sources:
            origin_dl = settings[origin].get("dead_letter")
            where = self._where(origin_dl, ("streams", origin))
            subjects.append((f"{prefix}.{origin}.>", f"dead letters of `{origin}`", where))
        if not subjects:
            self.err(
                spath,
                f"stream `{sname}` has no subjects: declare `topics`, or name it as another "
                "stream's `dead_letter`",
                at_key=True,
            )
        for subject, what, where in subjects if check_subjects else ():
            for other_subject, (other_stream, other_what, _) in index.overlapping(subject):
                if other_stream == sname:
                    self.err(
                        where,
                        f"{what} (subject `{subject}`) overlaps {other_what} (subject "
                        f"`{other_subject}`) in the same stream `{sname}`; the server refuses "
                        "overlapping subjects in one stream",
                        at_key=True,
                    )
                else:
                    self.err(
                        where,
                        f"subject `{subject}` of stream `{sname}` ({what}) overlaps subject "
                        f"`{other_subject}` of stream `{other_stream}` ({other_what}); a message "
                        "can be stored by only one stream (server error 10065)",
                        at_key=True,
                    )
            index.add(subject, (sname, what, where))
        # -- effective settings checks
        self._check_stream_limits(sname, ss, values)
        if dl_sources and values["retention"] == "interest":
            # Measured: the server acks each dead letter and keeps none when no consumer's
            # filter takes it, and the bus terminates the original once the dead letter is
            # acked: the message would be gone from both streams.
            origins = ", ".join(f"`{o}`" for o in dl_sources)
            self.err(
                self._where(ss.get("retention"), spath),
                f"stream `{sname}` receives the dead letters of {origins} but has retention "
                "interest: an interest stream keeps a message only while a consumer's filter "
                "takes it, so dead letters would be dropped as they arrive (and their "
                "originals terminated); use retention: limits",
            )
        line, col = self.locs.of_key(spath)
        # The stream's side of a consumer's inputs: its topics (per prefix), and where the
        # two settings a consumer is checked against come from (the values are the
        # document's at those paths, or the built-in defaults).
        stream_key = (
            sname,
            prefix,
            ss["retention"].path if "retention" in ss else None,
            ss["replicas"].path if "replicas" in ss else None,
        )
        by_name = {t.name: t for t in topics}
        # Not a mapping (a schema error, reported): no consumer. The genexp's first iterable
        # is evaluated at once, so the check cannot sit in its condition.
        declared = s.get("consumers")
        consumers = [
            c
            for c in (
                self._build_consumer(env, sname, cname, c, values, by_name, stream_key)
                for cname, c in (declared if isinstance(declared, dict) else {}).items()
                if isinstance(c, dict) and (*spath, "consumers", cname) not in self.bad_paths
            )
            if c is not None
        ]
        if values["retention"] == "workqueue":
            self._check_workqueue(sname, consumers, [x[0] for x in subjects])
        self._warn_unconsumed(sname, values["retention"], topics, consumers)
        if consumers and not isinstance(values["dead_letter"], str):
            self.warn(
                spath,
                f"stream `{sname}` has consumers but no `dead_letter`: a message that exhausts "
                "max_deliver stays in the stream, undelivered, and bus_runtime can only log it",
                at_key=True,
            )
        kwargs = {k: values[k] for k in STREAM_FIELD_TO_API}
        for k, default in BUILTIN_STREAM.items():
            if kwargs[k] is None:
                kwargs[k] = default
        return Stream(
            name=sname,
            subject_prefix=prefix,
            subjects=tuple(x[0] for x in subjects),
            topics=tuple(topics),
            consumers=tuple(consumers),
            metadata=values["metadata"] or (),
            dead_letter=values["dead_letter"] if isinstance(values["dead_letter"], str) else None,
            dead_letter_sources=tuple(dl_sources),
            location=Location(self.locs.file, line, col),
            field_locations=self._locations(ss),
            **kwargs,
        )

    def _warn_unconsumed(
        self, sname: str, retention: Any, topics: list[Topic], consumers: list[Consumer]
    ) -> None:
        if retention not in ("interest", "workqueue"):
            return
        if any(not c.filter_subjects for c in consumers):
            return  # an unfiltered consumer takes every subject
        # A consumer's filters are its topics' subjects, and the topics of one stream never
        # overlap (refused above), so a topic is taken exactly when a consumer lists it.
        taken = {name for c in consumers for name in c.topics}
        for t in topics:
            if t.name not in taken:
                effect = (
                    "the server drops its events at once (interest retention keeps a message "
                    "only while a consumer's filter takes it)"
                    if retention == "interest"
                    else "its jobs pile up unprocessed"
                )
                self.warn(
                    ("streams", sname, "topics", t.name),
                    f"no consumer of {retention} stream `{sname}` takes topic `{t.name}`: {effect}",
                    at_key=True,
                )

    def _check_stream_limits(self, sname: str, ss: dict[str, Setting], v: dict[str, Any]) -> None:
        spath: KeyPath = ("streams", sname)
        max_age, dw = v["max_age"], v["duplicate_window"]
        if isinstance(max_age, int) and 0 < max_age < 100 * MS:
            self.err(
                self._where(ss.get("max_age"), spath),
                f"max_age {format_duration(max_age)} is below the server's minimum of 100ms (0 keeps messages forever)",
            )
        if isinstance(dw, int):
            where = self._where(ss.get("duplicate_window"), spath)
            if dw < 100 * MS:
                self.err(
                    where,
                    f"duplicate_window {format_duration(dw)} is below the server's minimum of 100ms",
                )
            elif isinstance(max_age, int) and max_age >= 100 * MS and dw > max_age:
                self.err(
                    where,
                    f"duplicate_window {format_duration(dw)} is longer than max_age "
                    f"{format_duration(max_age)} of stream `{sname}`; the server refuses it",
                )
        marker_ttl = v["subject_delete_marker_ttl"]
        if isinstance(marker_ttl, int) and 0 < marker_ttl < SECOND:
            self.err(
                self._where(ss.get("subject_delete_marker_ttl"), spath),
                f"subject_delete_marker_ttl {format_duration(marker_ttl)} is below the server's "
                "minimum of 1s",
            )
        if isinstance(marker_ttl, int) and marker_ttl > 0:
            # The server (2.11 to 2.15, measured) stores a stream with delete markers with
            # allow_msg_ttl and allow_rollup_hdrs on and deny_purge off, whatever was sent:
            # the topology must say so, or the plan never converges (and deny_purge would
            # be dropped without a word).
            needs = [f"`{k}: true`" for k in ("allow_msg_ttl", "allow_rollup_hdrs") if not v[k]]
            if v["deny_purge"]:
                needs.append("`deny_purge: false`")
            if needs:
                self.err(
                    self._where(ss.get("subject_delete_marker_ttl"), spath),
                    "the server stores a stream with delete markers "
                    "with allow_msg_ttl and allow_rollup_hdrs on and deny_purge off, whatever "
                    f"is sent; write {' and '.join(needs)} in stream `{sname}`",
                )
        if v["discard_new_per_subject"]:
            mps = v["max_msgs_per_subject"]
            if v["discard"] != "new" or not (isinstance(mps, int) and mps > 0):
                self.err(
                    self._where(ss.get("discard_new_per_subject"), spath),
                    "discard_new_per_subject needs discard: new and max_msgs_per_subject > 0",
                )
        if v["deny_purge"] and v["allow_rollup_hdrs"]:
            self.err(
                self._where(ss.get("allow_rollup_hdrs"), spath),
                "allow_rollup_hdrs cannot be combined with deny_purge (a rollup purges)",
            )
