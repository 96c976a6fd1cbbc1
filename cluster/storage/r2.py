"""``r2://bucket/key``: Cloudflare R2 as an fsspec protocol.

R2 speaks S3 at ``https://<account_id>.r2.cloudflarestorage.com``; this is s3fs with that
endpoint filled in from ``account_id`` (or an explicit ``endpoint_url``). The package
registers it under fsspec's ``fsspec.specs`` entry point, so plain fsspec, pyarrow
datasets and pandas open ``r2://`` URLs too (the catalog's exporter among them).
"""

from __future__ import annotations

from s3fs import S3FileSystem


class R2FileSystem(S3FileSystem):
    protocol = ("r2",)

    def __init__(self, *args, account_id: str | None = None, endpoint_url: str | None = None,
                 client_kwargs: dict | None = None, **kwargs) -> None:
        client_kwargs = dict(client_kwargs or {})
        endpoint = (endpoint_url or client_kwargs.get("endpoint_url")
                    or (account_id and f"https://{account_id}.r2.cloudflarestorage.com"))
        if not endpoint:
            raise ValueError("an r2:// URL needs the storage option 'account_id' or 'endpoint_url'")
        client_kwargs["endpoint_url"] = endpoint
        client_kwargs.setdefault("region_name", "auto")
        super().__init__(*args, client_kwargs=client_kwargs, **kwargs)
