"""Dask execution: the farm, its graphs and tasks, placement and quarantine (may import pipelines, catalog and cluster.storage; never cluster.http or cluster.cli)."""

__all__ = ["Batch", "Farm"]


def __getattr__(name: str):
    # Lazy, so that `mediafarm --help` and the worker-side modules do not pay for the client.
    if name in __all__:
        from cluster import farm

        return getattr(farm, name)
    raise AttributeError(f"module 'cluster' has no attribute {name!r}")
