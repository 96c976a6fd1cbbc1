"""The HTTP endpoint on FastAPI: routes (one router per resource), models, auth, uploads and the server (may import cluster, cluster.storage and catalog; never cluster.cli)."""
