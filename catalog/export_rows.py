"""The row-wise reader: a dataset's rows through SQLAlchemy, turned into Arrow column by column.

The export's first reader, kept as the reference the Arrow-native one (``catalog.export_arrow``)
is checked against, as the baseline its benchmark measures, and for databases that have no
Arrow-native reader. Each value goes through a Python object and SQLAlchemy's result
processing (on SQLite a regular expression per timestamp), so it reads about 60,000 rows/s.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pyarrow as pa

from catalog.export_datasets import changes_query, finish, selected_fields
from catalog.repository import Catalog


def row_batches(catalog: Catalog, name: str, previous: datetime | None, cutoff: datetime,
                batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Dataset ``name``'s changes as record batches of at most ``batch_rows`` rows, streamed."""
    query = changes_query(catalog, name, previous, cutoff)
    fields = selected_fields(name)
    with catalog.engine.connect() as conn:
        # A server-side cursor on PostgreSQL: batch_rows rows in memory, not the table.
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(query)
        for rows in result.partitions(batch_rows):
            columns = {f.name: pa.array(values, type=f.type)
                       for values, f in zip(zip(*rows), fields)}
            del rows  # the Python rows go before the next batch is fetched, not after
            batch = finish(name, columns)
            yield batch
            del batch
