"""What happens to one asset: pure stage functions, recipes and limits.

Nothing in this package touches fsspec, SQLAlchemy or Dask; IO lives in
``cluster`` (stores, tasks) and ``catalog`` (the repository).
"""
