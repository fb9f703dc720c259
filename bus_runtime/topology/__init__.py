"""The topology: its model, loading and validation, and what they stand on.

- `model`: the frozen dataclasses of one topology with its effective settings;
- `loader`: file -> YAML nodes -> JSON Schema -> semantic checks -> model, every error at
  its `file:line:col`; `checks/` holds the semantic checks, split by subject;
- `schema`: the format's shipped JSON Schema and its strict validators;
- `yaml_source`: YAML composed with the place of every key, duplicate keys refused;
- `subjects`: NATS subject syntax, matching and overlap;
- `units`: durations and sizes with units;
- `json_schema_compiler`: a JSON Schema compiled to Python code, the fast yes/no check
  used for the topology itself and for payloads.

Nothing here opens a connection or imports the NATS client.
"""
