"""``mediafarm uploads clean``: drop expired resumable uploads and abort abandoned multipart ones.

The server does the same every ``MEDIAFARM_API_UPLOAD_CLEANUP_INTERVAL`` seconds; this is
for deployments that turn that off (0) and run it from cron instead, or for an operator.
"""

from __future__ import annotations

import argparse
import json


def register(commands) -> None:
    """Add ``uploads`` and its actions to the CLI's sub-commands."""
    uploads = commands.add_parser("uploads", help="resumable and multipart uploads of the "
                                                  "HTTP endpoint")
    actions = uploads.add_subparsers(required=True, metavar="ACTION")
    clean = actions.add_parser("clean", help="drop expired tus uploads and abort abandoned "
                                             "S3 multipart uploads")
    clean.set_defaults(run=_clean)


def _clean(args: argparse.Namespace) -> int:
    from catalog import connect
    from cluster.config import load_settings
    from cluster.http.service import load_api_config
    from cluster.http.upload_cleanup import clean_uploads
    from cluster.storage.stores import open_stores

    settings = load_settings(config_file=getattr(args, "config", None))
    config = load_api_config(settings)
    counts = clean_uploads(connect(settings.catalog_url), open_stores(settings)["buffer"],
                           config.upload_expires_s)
    print(json.dumps(counts))
    return 0
