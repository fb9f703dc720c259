"""The live reconciler: compare a topology with a JetStream server (plan) and converge it (apply).

- `plan`: the plan model (`Plan`, `Change`, `FieldChange`) and its text and JSON forms;
- `marks`: the metadata that marks what natstopo manages;
- `diff`: one stream's or consumer's differences and the config apply sends;
- `planner`: `plan_changes`, reading the server and deciding per asset;
- `apply`: `apply_plan` in a safe order, and `reconcile` in one call;
- `importer`: a topology written from an existing server.

Each difference is classified by the server's rules (`bus_runtime.jetstream.rules`):
`in_place`, `replace` (the server refuses it in place: delete and recreate, losing messages
or position), `destructive` (a lowered limit that drops stored messages, or a delete).

Managed scope: every asset natstopo creates carries metadata `natstopo.topology` and
`natstopo.fingerprint`. Only marked assets are ever deleted; an unmarked stream is
reported as unmanaged and never touched. A declared asset that exists unmarked is adopted
(marked, in place); one marked by another topology is a conflict that apply refuses.
"""
