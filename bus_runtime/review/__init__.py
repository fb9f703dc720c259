"""Review of a topology: diff (lead's), AsyncAPI, graphs, typed code.

Documents and code made from the one model, for pull-request review and for applications:

- `diff`: the change between two topologies, judged by the server's rules and the contract's;
- `asyncapi`: an AsyncAPI 3.0 document (channels = topics, messages with the envelope and
  the payload schemas, send/receive operations per service, `x-jetstream` settings);
- `graph`: services -> topics -> streams -> consumers -> services and dead letters, as a
  Mermaid flowchart, a Graphviz digraph or JSON;
- `codegen`: a typed Python module for applications (topic constants, TypedDicts of the
  payload schemas) that makes `mypy --strict` catch a misspelt topic or field.

Nothing here is imported by `import bus_runtime`: the CLI imports these modules for its
commands only, and they need nothing beyond the runtime's own dependencies.
"""
