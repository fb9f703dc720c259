"""Review of a topology change, and documents and code made from the model.

- `diff`: `natstopo diff`'s judgements (infrastructure per environment, contract per
  service, permissions); `schema_compat`: payload schema changes per reader and writer;
  `sources`: BASE/HEAD from a file or `REF:path` in git; `diff_render`: text, JSON,
  markdown and GitHub annotations.
"""
