"""HMAC-signed, expiring URLs for renditions served by this endpoint (local stores).

A signature covers the method, the rendition's path (``/v1/renditions/<sha256>``, which
also stands for every file of its HLS/DASH package under that path), the asset it was
handed out for, and the expiry (Unix seconds). The asset is in the URL so that serving
checks it is still ready and not deleted: a delete stops a signed URL at once. The path
signed is the route's own, not the request's, so a proxy's prefix does not break it.

The standard library's ``hmac`` does the work (HMAC-SHA256, ``compare_digest``); no
library adds anything over it for one MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from urllib.parse import urlencode

SECRET_FILE = "url-secret"
SIGNED_PARAMETERS = ("asset", "expires", "sig")


def signature(secret: bytes, method: str, path: str, asset: str, expires: int) -> str:
    message = "\n".join(("mediafarm-url-v1", method.upper(), path, asset, str(expires)))
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def signed_query(secret: bytes, path: str, asset: str, expires: int) -> str:
    """The query string that lets its holder GET ``path`` (and its package) until ``expires``."""
    return urlencode({"asset": asset, "expires": expires,
                      "sig": signature(secret, "GET", path, asset, expires)})


def valid(secret: bytes, method: str, path: str, asset: str, expires: str, sig: str,
          now: float) -> bool:
    """Whether ``sig`` is this server's signature of the request, and not yet expired."""
    if not (expires.isascii() and expires.isdigit()) or len(expires) > 12 or int(expires) <= now:
        return False
    expected = signature(secret, method, path, asset, int(expires))
    return hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace"))


def load_secret(value: str | None, data_dir: str) -> bytes:
    """``MEDIAFARM_API_URL_SECRET`` if set, else the data folder's secret, made on first use.

    Every server behind one address must share it (set the variable, or share the folder):
    a URL signed by one is checked by another.
    """
    if value:
        return value.encode()
    path = os.path.join(data_dir, SECRET_FILE)
    os.makedirs(data_dir, exist_ok=True)
    if not os.path.exists(path):
        # Written aside and linked into place: a server starting beside this one reads
        # either no file or the whole secret, and exactly one secret wins.
        staging = f"{path}.{secrets.token_hex(6)}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(staging, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(staging)
    with open(path, encoding="ascii") as handle:
        secret = handle.read().strip()
    if len(secret) < 32:
        raise ValueError(f"{SECRET_FILE} in the data folder is empty or short: remove it, "
                         "or set MEDIAFARM_API_URL_SECRET")
    return secret.encode()
