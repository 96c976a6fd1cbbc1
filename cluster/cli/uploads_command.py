"""``mediafarm uploads clean``: drop expired resumable uploads, abort abandoned multipart ones,
and remove staging objects lost workers left in the originals store.

The server does the same every ``MEDIAFARM_API_UPLOAD_CLEANUP_INTERVAL`` seconds; this is
for deployments that turn that off (0) and run it from cron instead, or for an operator.
``mediafarm scrub`` runs it too (``clean``, without the staging sweep, which it does itself).
"""

from __future__ import annotations

import argparse
import json

from catalog import connect
from cluster.config import Settings, load_settings
from cluster.http.service import load_api_config
from cluster.http.upload_cleanup import clean_uploads
from cluster.storage.stores import open_stores


def clean(settings: Settings, staging: bool = True) -> dict[str, int]:
    """Expired and abandoned uploads dropped (and, with ``staging``, the originals store's
    staging swept); how many of each kind went."""
    config = load_api_config(settings)
    stores = open_stores(settings)
    return clean_uploads(connect(settings.catalog_url), stores["buffer"],
                         config.upload_expires_s, originals=stores["originals"] if staging else None)


def run_clean(args: argparse.Namespace) -> int:
    print(json.dumps(clean(load_settings(config_file=getattr(args, "config", None)))))
    return 0
