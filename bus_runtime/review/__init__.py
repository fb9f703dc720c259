"""Review of a topology change, and documents and code made from the one model.

- `diff`: `natstopo diff`'s judgements (infrastructure per environment, contract per
  service, permissions); `schema_compat`: payload schema changes per reader and writer;
  `sources`: BASE/HEAD from a file or `REF:path` in git; `diff_render`: text, JSON,
  markdown and GitHub annotations;
- `asyncapi`: an AsyncAPI 3.0 document (channels = topics, messages with the envelope and
  the payload schemas, send/receive operations per service, `x-jetstream` settings);
- `graph`: services -> topics -> streams -> consumers -> services and dead letters, as a
  Mermaid flowchart, a Graphviz digraph or JSON;
- `codegen`: a typed Python module for applications (topic constants, TypedDicts of the
  payload schemas) that makes `mypy --strict` catch a misspelt topic or field.

Nothing here is imported by `import bus_runtime`: the CLI imports these modules for its
commands only, and they need nothing beyond the runtime's own dependencies.
"""
