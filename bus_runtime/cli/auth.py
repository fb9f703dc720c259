"""`natstopo auth render` and `natstopo auth show`: the server's authorization from the topology.

`render` writes into `--out DIR` the authorization include (`auth.conf`: bcrypt hashes or
public nkeys only), one `<identity>.env` of `NATS_*` variables per service and for the
`admin` and `monitor` identities, and `identities.json`; every file 0600. It prints file
names and counts, never a secret. `show` prints the permissions each identity gets.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._errors import SetupError
from ..security.credentials import AUTH_MODES, DEFAULT_BCRYPT_COST, PASSWORD, CredentialStore
from ..security.permissions import ADMIN, all_permissions
from .common import EXIT_OK, add_topology_args, load_args_topology


def _render(args: argparse.Namespace) -> int:
    topology = load_args_topology(args)
    store = CredentialStore(args.out)
    try:
        result = store.render(
            topology,
            mode=args.mode,
            rotate=args.rotate,
            retire=args.retire,
            server_url=args.server,
            cost=args.bcrypt_cost,
            account=args.account,
            domain=args.domain,
        )
    except OSError as exc:  # a missing parent, a file where the folder should be, no access
        where = exc.filename or args.out
        raise SetupError(
            f"--out {args.out}: cannot write the credentials folder ({where}: "
            f"{exc.strerror or exc}); give a folder that exists or can be made"
        ) from None
    services = len(topology.services)
    print(
        f"wrote {result.auth_file} (account {args.account or topology.name}: {services} "
        "services and admin; system account SYS: monitor)"
    )
    print(f"wrote {len(result.env_files)} env files in {result.directory} (0600)")
    for label, names in (
        ("new credentials", result.created),
        ("rotated (the previous credential stays valid until --retire)", result.rotated),
        ("retired previous credentials", result.retired),
        ("removed (no longer in the topology)", result.removed),
    ):
        if names:
            print(f"{label}: {', '.join(names)}")
    overlap = sorted(i for i, n in result.valid.items() if n > 1)
    if overlap:
        print(f"still accepting an older credential: {', '.join(overlap)}")
    print("reload the servers to apply it (nats-server --signal reload, or SIGHUP)")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    topology = load_args_topology(args)
    perms = perms_all = all_permissions(topology, account=args.account, domain=args.domain)
    if args.service:
        missing = [s for s in args.service if s not in perms]
        if missing:
            raise SetupError(f"unknown identity: {', '.join(missing)}")
        perms = {k: v for k, v in perms.items() if k in args.service}
    if args.format == "json":
        data: dict[str, Any] = {
            k: {
                **v.to_dict(),
                "inbox_prefix": v.inbox_prefix,
                "account": v.account,
                "api_prefix": v.api_prefix,
                "imports": [
                    {
                        "subject": i.subject,
                        "local": i.local,
                        "stream_response": i.stream_response,
                        "response_threshold": i.response_threshold,
                    }
                    for i in v.imports
                ],
            }
            for k, v in perms.items()
        }
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for name, p in perms.items():
        api = f", JetStream API {p.api_prefix}" if p.api_prefix else ""
        print(f"{name} (account {p.account}, inbox {p.inbox_prefix}{api})")
        for subject in p.publish:
            print(f"  publish    {subject}")
        for subject in p.subscribe:
            print(f"  subscribe  {subject}")
        if p.imports:
            jetstream = perms_all[ADMIN].account
            print(
                f"  imports    each publish subject from account {jetstream} "
                f"({p.api_prefix}.<x> is its $JS.API.<x>)"
            )
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    add_topology_args(p)
    p.add_argument(
        "--account",
        default=None,
        help="the JetStream account, of the streams and the admin (default: the topology's "
        "name); a service's account is <account>-<service>",
    )
    p.add_argument("--domain", default=None, help="JetStream domain of the servers, if one is set")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser(
        "auth",
        help="the server's authorization and each service's credentials, from the topology",
        description="NATS permissions derived from the topology: each service may publish its "
        "declared topics and use its own consumers, nothing else.",
    )
    verbs = auth.add_subparsers(dest="auth_command", metavar="ACTION", required=True)

    r = verbs.add_parser(
        "render",
        help="write auth.conf and a NATS_* env file per identity into --out DIR",
        description="Write DIR/auth.conf (the authorization include of nats.conf: bcrypt hashes "
        "or public nkeys only), DIR/<service>.env, DIR/admin.env, DIR/monitor.env (NATS_* "
        "variables, 0600) and DIR/identities.json. Existing credentials are kept. Needs the "
        "auth extra: pip install 'natstopo[auth]'.",
    )
    _common(r)
    r.add_argument("--out", required=True, metavar="DIR", help="the credentials folder")
    r.add_argument(
        "--mode",
        choices=AUTH_MODES,
        default=PASSWORD,
        help="password (bcrypt-hashed in the config, the default) or nkey",
    )
    r.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="IDENTITY",
        help="give IDENTITY a new credential; the previous one stays valid (repeatable)",
    )
    r.add_argument(
        "--retire",
        action="append",
        default=[],
        metavar="IDENTITY",
        help="stop accepting IDENTITY's previous credentials (after its clients moved)",
    )
    r.add_argument(
        "--server", default=None, metavar="URL", help="also write NATS_URL into the env files"
    )
    r.add_argument(
        "--bcrypt-cost",
        type=int,
        default=DEFAULT_BCRYPT_COST,
        choices=range(4, 32),
        metavar="N",
        help=f"bcrypt cost of new hashes (default {DEFAULT_BCRYPT_COST})",
    )
    r.set_defaults(func=_render)

    s = verbs.add_parser(
        "show",
        help="print the permissions of each identity (no credentials needed)",
        description="The publish and subscribe subjects each service, admin and monitor get.",
    )
    _common(s)
    s.add_argument(
        "--service", action="append", default=None, metavar="IDENTITY", help="only this one"
    )
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=_show)
