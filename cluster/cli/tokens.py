"""``mediafarm token create|revoke|list``: the HTTP endpoint's bearer tokens, kept in the catalog."""

from __future__ import annotations

import argparse
import sys

from cluster.cli.catalog_commands import open_catalog
from cluster.cli.options import command_settings
from cluster.http.auth import create_token, list_tokens, parse_scopes, revoke_token


def run_create(args: argparse.Namespace) -> int:
    scopes = parse_scopes(args.scopes)
    token_id, token = create_token(_engine(args), args.owner, scopes)
    print(f"token {token_id} for {args.owner} ({','.join(scopes)}); it is shown only now:",
          file=sys.stderr)
    print(token)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    if not revoke_token(_engine(args), args.token_id):
        print(f"mediafarm: no live token {args.token_id}", file=sys.stderr)
        return 2
    print(f"token {args.token_id} revoked", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    for row in list_tokens(_engine(args)):
        state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "live"
        print(f"{row['id']}  {row['owner']}  {','.join(row['scopes'])}  {state}")
    return 0


def _engine(args: argparse.Namespace):
    return open_catalog(command_settings(args)).engine
