"""Talking to a JetStream server: connection options and connect, one API client, and the
server's own defaults and update rules per version.

- `connect`: `ConnectOptions` from flags or `NATS_*` variables, and a bounded connect;
- `api`: `JetStreamApi`, the one client of the `$JS.API` JSON API that the reconciler,
  the bus's start-up check, `dlq` and `import` use;
- `rules`: the server's defaults, which fields need which version, and how each field
  may change (in place, replace, destructive).
"""
