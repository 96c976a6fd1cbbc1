"""The HTTP endpoint: routes, auth, uploads and the server (may import cluster, cluster.storage, catalog and pipelines; never cluster.cli)."""
