"""Record the SQL statements a store runs, to check how many commits or lookups a call costs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sql_statements(conn: sqlite3.Connection) -> Iterator[list[str]]:
    """Yield a list that fills, in order, with every statement ``conn`` runs inside the block;
    the trace stops when the block ends, even by an exception."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        conn.set_trace_callback(None)
