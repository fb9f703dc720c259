"""The event bus that application services use, in two implementations with one contract.

- `envelope`: `EventPayload`, the JSON envelope on the wire, event ids, trace context;
- `binding`: one service's view of the topology (what it may publish, which consumer it
  reads each topic through) and its compiled payload schema checks;
- `delivery`: the delivery policy both buses share: retry delays, ack-wait heartbeats,
  dead-letter headers;
- `contract`: `Handler` and the `EventBus` protocol application code relies on;
- `nats_bus`, with `publisher` and `pull_consumer`: the bus on NATS JetStream;
- `memory`: the same semantics in one process, for application tests;
- `factory`: `create_event_bus`;
- `dead_letters`: reading and replaying dead letters (`natstopo dlq`);
- `observability`: log fields and the metrics hook.
"""
