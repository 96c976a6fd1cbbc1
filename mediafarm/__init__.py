"""``python -m mediafarm``: the ``mediafarm`` command (``cluster.cli``) under the project's name."""
