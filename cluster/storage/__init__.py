"""Storage: the content-addressed stores and where sources come from, over fsspec (may import pipelines, catalog and cluster.config only)."""
