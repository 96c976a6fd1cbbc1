"""What is known: the catalog's tables, migrations and the repository that writes them."""

from catalog.db import connect, upgrade
from catalog.repository import Catalog

__all__ = ["Catalog", "connect", "upgrade"]
