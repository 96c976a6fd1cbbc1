"""``mediafarm uploads clean``: drop expired resumable uploads, abort abandoned multipart ones,
and remove staging objects lost workers left in the originals store.

The server does the same every ``MEDIAFARM_API_UPLOAD_CLEANUP_INTERVAL`` seconds; this is
for deployments that turn that off (0) and run it from cron instead, or for an operator.
"""

from __future__ import annotations

import argparse
import json

from catalog import connect
from cluster.config import load_settings
from cluster.http.service import load_api_config
from cluster.http.upload_cleanup import clean_uploads
from cluster.storage.stores import open_stores


def run_clean(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=getattr(args, "config", None))
    config = load_api_config(settings)
    stores = open_stores(settings)
    counts = clean_uploads(connect(settings.catalog_url), stores["buffer"],
                           config.upload_expires_s, originals=stores["originals"])
    print(json.dumps(counts))
    return 0
