"""Check 3b: one consumer's effective settings, and the work-queue rules between consumers."""

from __future__ import annotations

from typing import Any

from ..model import (
    CONSUMER_FIELD_TO_API,
    DEFAULT_CONCURRENCY,
    DEFAULT_FETCH_BATCH,
    DEFAULT_HANDLER_TIMEOUT,
    Consumer,
    Location,
    Topic,
)
from ..subjects import SubjectIndex
from ..units import MS, format_duration
from ..yaml_source import Path as KeyPath
from .base import (
    BUILTIN_CONSUMER,
    CONSUMER_SETTINGS,
    Setting,
)
from .references import ReferenceChecks


class ConsumerChecks(ReferenceChecks):
    """Builds a consumer of one environment and checks it against its stream."""

    def _build_consumer(
        self,
        env: str | None,
        sname: str,
        cname: str,
        c: dict[str, Any],
        stream_values: dict[str, Any],
        topics: dict[str, Topic],
        stream_key: tuple[Any, ...],
    ) -> Consumer | None:
        """The consumer of one environment; built once per distinct set of inputs.

        What a consumer is depends on its stream's effective settings, its topics and its
        own layered settings, which are key paths into the one document: an environment
        that changes none of them (most environments change a few stream settings) gets
        the consumer built for an earlier one, with the errors and warnings that build
        reported (`stream_key` names the stream, its topics and where its `retention` and
        `replicas` come from: the only settings of the stream a consumer depends on).
        """
        cpath: KeyPath = ("streams", sname, "consumers", cname)
        cs = self._layer(
            env,
            "consumer",
            cpath,
            ("environments", env or "", "streams", sname, "consumers", cname),
        )
        key = (cname, stream_key, tuple([(k, s.path) for k, s in cs.items()]))
        known = self._consumers_built.get(key)
        if known is not None:
            built, errors, warnings = known
            self.errors += errors
            self.warnings += warnings
            return built
        e0, w0 = len(self.errors), len(self.warnings)
        consumer = self._make_consumer(sname, cname, c, stream_values, topics, cpath, cs)
        self._consumers_built[key] = (consumer, self.errors[e0:], self.warnings[w0:])
        return consumer

    def _make_consumer(
        self,
        sname: str,
        cname: str,
        c: dict[str, Any],
        stream_values: dict[str, Any],
        topics: dict[str, Topic],
        cpath: KeyPath,
        cs: dict[str, Setting],
    ) -> Consumer | None:
        v = self._values(cs, CONSUMER_SETTINGS)
        if v["max_ack_pending"] == 0:
            v["max_ack_pending"] = None  # the server reads 0 as its default (1000)
        listed = c.get("topics")
        names = (
            tuple(t for t in listed if isinstance(t, str) and t in topics)
            if isinstance(listed, list)
            else ()
        )
        filters = tuple(topics[t].subject for t in names)
        retention = stream_values["retention"]
        stream_replicas = stream_values["replicas"] or 1
        md, backoff = v["max_deliver"], v["backoff"]
        if backoff and isinstance(md, int) and md != -1 and len(backoff) > md:
            self.err(
                self._where(cs.get("backoff"), cpath),
                f"backoff has {len(backoff)} delays but max_deliver is {md}: a message is "
                f"delivered at most {md} times, so at most {md} delays apply (server error 10116)",
            )
        if backoff:
            # The server replaces ack_wait with backoff[0]; say so rather than drift forever.
            aw = cs.get("ack_wait")
            own = aw is not None and aw.path is not None and "consumers" in aw.path
            if own and isinstance(v["ack_wait"], int) and v["ack_wait"] != backoff[0]:
                assert aw is not None and aw.path is not None
                self.err(
                    aw.path,
                    f"ack_wait {format_duration(v['ack_wait'])} has no effect with a backoff: the "
                    f"server uses backoff[0] ({format_duration(backoff[0])}) as the ack wait; "
                    "drop ack_wait or make it equal to the first backoff delay",
                )
            v["ack_wait"] = backoff[0]
        if retention == "workqueue":
            if v["ack_policy"] != "explicit":
                self.err(
                    self._where(cs.get("ack_policy"), cpath),
                    f"consumer `{cname}` of work-queue stream `{sname}` must be ack_policy: explicit, "
                    f"not {v['ack_policy']} (server error 10098)",
                )
            if v["deliver_policy"] != "all":
                self.err(
                    self._where(cs.get("deliver_policy"), cpath),
                    f"consumer `{cname}` of work-queue stream `{sname}` must be deliver_policy: all, "
                    f"not {v['deliver_policy']} (server error 10101)",
                )
        rep = v["replicas"]
        if isinstance(rep, int):
            if rep > stream_replicas:
                self.err(
                    self._where(cs.get("replicas"), cpath),
                    f"consumer replicas {rep} exceed stream `{sname}` replicas {stream_replicas} (server error 10126)",
                )
            elif retention in ("workqueue", "interest") and rep != stream_replicas:
                self.err(
                    self._where(cs.get("replicas"), cpath),
                    f"on a {retention} stream consumer replicas must equal the stream's "
                    f"({stream_replicas}), got {rep} (server error 10134)",
                )
        expires = v["max_request_expires"]
        if isinstance(expires, int) and 0 < expires < MS:
            self.err(
                self._where(cs.get("max_request_expires"), cpath),
                f"max_request_expires {format_duration(expires)} is below the server's minimum "
                "of 1ms (server error 10115)",
            )
        if v["headers_only"] is True:
            # The bus decodes, checks and hands over every body: a headers-only consumer
            # would dead-letter each message as an empty body.
            self.err(
                self._where(cs.get("headers_only"), cpath),
                f"consumer `{cname}` has headers_only: true: the server would deliver every "
                f"message without its body, and bus_runtime (service `{c.get('service')}`) "
                "needs the body to hand the event to a handler; remove headers_only",
            )
        handler_timeout = v["handler_timeout"]
        if isinstance(handler_timeout, int) and handler_timeout < MS:
            self.err(
                self._where(cs.get("handler_timeout"), cpath),
                f"handler_timeout {format_duration(handler_timeout)} is below 1ms: a handler "
                "needs time to run (the default is 5m)",
            )
        if v["deliver_policy"] == "by_start_sequence" and cs.get("opt_start_seq") is None:
            self.err(
                self._where(cs.get("deliver_policy"), cpath),
                "deliver_policy by_start_sequence needs opt_start_seq",
            )
        if v["opt_start_seq"] is not None and v["deliver_policy"] != "by_start_sequence":
            self.err(
                self._where(cs.get("opt_start_seq"), cpath),
                "opt_start_seq is only used with deliver_policy: by_start_sequence",
            )
        if v["deliver_policy"] == "last_per_subject" and not isinstance(listed, list):
            # Without `topics` the consumer has no filter subject, which the server refuses.
            self.err(
                self._where(cs.get("deliver_policy"), cpath),
                "deliver_policy last_per_subject needs topics (a filter) (server error 10094)",
            )
        if v["mem_storage"] is True:
            self.warn(
                self._where(cs.get("mem_storage"), cpath),
                f"consumer `{cname}` keeps its state in memory (mem_storage: true): a restart "
                "of its server loses the consumer (measured on 2.10 to 2.15), and apply "
                "recreates it from its deliver_policy, delivering messages again",
            )
        svc = str(c["service"]) if isinstance(c.get("service"), str) else ""
        line, col = self.locs.of_key(cpath)
        kwargs = {k: v[k] for k in CONSUMER_FIELD_TO_API}
        for k in ("ack_policy", "deliver_policy"):
            if kwargs[k] is None:
                kwargs[k] = BUILTIN_CONSUMER[k]
        return Consumer(
            name=cname,
            stream=sname,
            service=svc,
            topics=names,
            filter_subjects=filters,
            metadata=v["metadata"] or (),
            fetch_batch=v["fetch_batch"] or DEFAULT_FETCH_BATCH,
            concurrency=v["concurrency"] or DEFAULT_CONCURRENCY,
            handler_timeout=handler_timeout
            if isinstance(handler_timeout, int) and handler_timeout >= MS
            else DEFAULT_HANDLER_TIMEOUT,
            location=Location(self.locs.file, line, col),
            field_locations=self._locations(cs),
            **kwargs,
        )

    def _check_workqueue(self, sname: str, consumers: list[Consumer], subjects: list[str]) -> None:
        index: SubjectIndex[str] = SubjectIndex()
        for c in consumers:
            cpath: KeyPath = ("streams", sname, "consumers", c.name)
            listed = self.mapping("streams", sname, "consumers", c.name).get("topics")
            if listed and not c.filter_subjects:
                continue  # it lists only topics that are not the stream's: reported already
            filters = c.filter_subjects or tuple(subjects)
            reported: set[str] = set()
            for f in filters:
                for _, other in index.overlapping(f):
                    if other in reported:
                        continue
                    reported.add(other)
                    what = "takes every subject" if not c.filter_subjects else f"takes `{f}`"
                    self.err(
                        (*cpath, "topics") if c.filter_subjects else cpath,
                        f"consumers `{other}` and `{c.name}` of work-queue stream `{sname}` overlap "
                        f"(`{c.name}` {what}): on a work-queue stream each subject has one "
                        "consumer (server error 10100); use an interest or limits stream to fan out",
                        at_key=not c.filter_subjects,
                    )
            for f in filters:
                index.add(f, c.name)
