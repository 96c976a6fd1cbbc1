"""The HTTP endpoint: routes, auth, uploads and the server (may import cluster, cluster.storage and catalog; never cluster.cli)."""
