"""``python -m mediafarm``: the ``mediafarm`` command (``cluster.cli.main``) under the project's name."""
