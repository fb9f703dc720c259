"""Security from the topology: what each service may publish and consume, enforced by NATS.

- `permissions`: per identity (each service, `admin`, `monitor`), the subjects it may
  publish to and subscribe to, derived from the model;
- `authorization`: the server's authorization include (an account with users whose
  passwords are bcrypt hashes or whose keys are public nkeys, and a system account);
- `credentials`: making and keeping credentials (`natstopo auth render`), `NATS_*` env
  files, and the `nats.connect` keyword arguments a service needs, inbox prefix included;
- `violations`: the server's permission violations as `PermissionViolationError`.

Only the standard library and nats-py are needed to connect; making credentials needs
the `auth` extra (bcrypt, nkeys).
"""

from .authorization import PublicCredential, declared_accounts, render_authorization
from .credentials import (
    CredentialStore,
    MissingExtraError,
    RenderResult,
    connect_kwargs,
    format_env_file,
    hash_password,
    new_password,
    read_env_file,
    service_connect_options,
    write_private,
)
from .permissions import (
    ADMIN,
    DLQ_OPERATOR,
    MONITOR,
    SERVICE_API_PREFIX,
    Export,
    Import,
    Permissions,
    account_hash,
    ack_subjects,
    admin_permissions,
    all_permissions,
    dlq_operator_permissions,
    inbox_prefix,
    jetstream_exports,
    monitor_permissions,
    service_account,
    service_permissions,
)
from .violations import permission_violation

__all__ = [  # noqa: RUF022 - grouped by module
    # permissions
    "ADMIN",
    "DLQ_OPERATOR",
    "MONITOR",
    "SERVICE_API_PREFIX",
    "Export",
    "Import",
    "Permissions",
    "account_hash",
    "ack_subjects",
    "admin_permissions",
    "all_permissions",
    "dlq_operator_permissions",
    "inbox_prefix",
    "jetstream_exports",
    "monitor_permissions",
    "service_account",
    "service_permissions",
    # authorization
    "PublicCredential",
    "declared_accounts",
    "render_authorization",
    # credentials
    "CredentialStore",
    "MissingExtraError",
    "RenderResult",
    "connect_kwargs",
    "format_env_file",
    "hash_password",
    "new_password",
    "read_env_file",
    "service_connect_options",
    "write_private",
    # violations
    "permission_violation",
]
