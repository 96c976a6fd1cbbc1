"""catalog.db.HEAD, which lets a catalog already up to date skip Alembic, is Alembic's head."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from catalog.db import HEAD, alembic_config, current_revision, upgrade


def test_head_is_the_newest_migration():
    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == HEAD


def test_a_new_catalog_is_migrated_and_then_left_alone(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == HEAD
    import alembic.command

    def no_alembic(*args, **kwargs):
        raise AssertionError("Alembic ran for a catalog already at its head")

    monkeypatch.setattr(alembic.command, "upgrade", no_alembic)
    upgrade(url)  # at the head: Alembic is not asked
    assert current_revision(url) == HEAD
