"""How work runs: stores, graphs, the Dask client side and the ``mediafarm`` command."""

__all__ = ["Batch", "Farm"]


def __getattr__(name: str):
    # Lazy, so that `mediafarm --help` and the worker-side modules do not pay for the client.
    if name in __all__:
        from cluster import farm

        return getattr(farm, name)
    raise AttributeError(f"module 'cluster' has no attribute {name!r}")
