"""``canalflow web serve`` (the clerks' workbench and the public notice) and ``canalflow web add-user``."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  canalflow web add-user --users users.yaml --user li --role clerk
  canalflow web add-user --users users.yaml --user wang --role approver
  canalflow web serve --users users.yaml --ledger sqlite:///out/ledger.db --district examples/demo-district.yaml
"""


def register(subparsers: Any) -> None:
    from canalflow.cliopts import add_influx_arguments, add_ledger_argument
    from canalflow.roles import ROLES

    parser = subparsers.add_parser("web", help="web workbench for billing clerks and the public water-use notice",
                                   epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="web_command", metavar="ACTION", required=True)
    srv = commands.add_parser("serve", help="serve the workbench (uvicorn)", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    srv.add_argument("--users", type=Path, required=True, help="YAML file of {user, role, argon2} entries (see add-user)")
    add_ledger_argument(srv)
    srv.add_argument("--district", type=Path, help="district YAML file (needed to start runs, for VEE edits and township names)")
    add_influx_arguments(srv, url_fallback=False)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8700)
    srv.add_argument("--behind-tls", action="store_true", help="mark cookies Secure (behind a TLS reverse proxy)")
    srv.add_argument("--forwarded-allow-ips", default="127.0.0.1", help="proxies whose X-Forwarded-Proto/For are trusted")
    srv.set_defaults(func=cmd_serve)
    add = commands.add_parser("add-user", help="add or replace an account (the password is read from the terminal or stdin)")
    add.add_argument("--users", type=Path, required=True)
    add.add_argument("--user", required=True)
    add.add_argument("--role", required=True, choices=ROLES, help="canalflow/roles.py: the same roles as the billing API's")
    add.set_defaults(func=cmd_add_user)


def cmd_add_user(args: argparse.Namespace) -> int:
    from web.auth import add_user

    password = getpass.getpass(f"password for {args.user}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    add_user(args.users, args.user, args.role, password)  # a UsersFileError: canalflow.cli reports it
    print(f"{args.user} ({args.role}) saved in {args.users}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from billing.service import ServiceConfig
    from web.app import WebConfig, create_app
    from web.auth import load_users

    accounts = load_users(args.users)
    config = WebConfig(ServiceConfig.from_args(args), accounts, secure_cookies=args.behind_tls)
    print(f"web workbench on http://{args.host}:{args.port} ({len(accounts)} account(s)); public notice at /public", file=sys.stderr)
    uvicorn.run(create_app(config), host=args.host, port=args.port, proxy_headers=True, forwarded_allow_ips=args.forwarded_allow_ips, log_level="info")
    return 0
