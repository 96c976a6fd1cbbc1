"""``mediafarm serve``: the HTTP submit endpoint under uvicorn (docs/http.md)."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from cluster.cli.options import command_settings
from cluster.farm import Farm
from cluster.http.app import create_app
from cluster.http.service import load_api_config
from cluster.http.slow_clients import TrustedProxies, guarded_protocol
from pipelines.recipe import load_recipe


def run_serve(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    recipe = load_recipe(args.recipe) if args.recipe else None
    config = load_api_config(settings)
    print(f"mediafarm: data folder {settings.data_dir}", file=sys.stderr)
    app = create_app(lambda: Farm(settings, scheduler_address=args.scheduler, n_workers=args.workers),
                     config, recipe)
    trusted = TrustedProxies(config.trusted_proxies)
    # X-Forwarded-For is believed only from configured proxies (uvicorn's own default trusts
    # 127.0.0.1, which would let any local client pick its rate-limit address).
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=10,
                http=guarded_protocol(config.header_timeout_s,
                                      config.max_unauthenticated_connections, trusted),
                proxy_headers=bool(trusted), forwarded_allow_ips=list(trusted.entries) or None)
    return 0
