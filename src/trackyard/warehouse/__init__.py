"""The warehouse loader: every event of the log in SQL tables, in Segment's layout.

Modules, in the order an event passes them:

- `loader`: the log consumer. Per batch: open a `Session` (the warehouse's load lock),
  read the log after the position the warehouse holds, hand the bodies to an in-memory
  DuckDB (`batch`), plan and load in one warehouse transaction; the next batch is read
  and shaped on a thread meanwhile;
- `batch`: the batch in DuckDB — distinct JSON structures (`shape`), sample events, and
  one generated SELECT per table that extracts and casts every column (an event table's
  rows are extracted once, into a staging table that `tracks` reads too);
- `tables`: which tables and columns a batch writes (Segment's rules, §4.1–§4.4);
  `naming`: go-snakecase, `_` prefixes, bounded names; `types`: the widening lattice;
- `plan`: new tables and columns, widened types, against what the warehouse has;
- `dialects`: one module per database behind one interface —

      Dialect: name, max_identifier_length, max_columns, ping(), describe(),
               session(engine) -> Session (connected, holding the load lock)
      Session: position(), existing_columns(schemas), load(plans, batch, expected)
               load() = one transaction over the dialect's primitives: _begin, _commit,
               _rollback, _read_position, _write_position, _ensure_schema, _create_table,
               _add_column, _widen_column (False: refused), _copy_as_text, _append, _upsert

  `duckdb_file` (INSERT … SELECT straight from the batch; the file is attached only while
  loading) and `postgres` (Arrow → CSV → COPY; advisory lock). A new dialect is a module
  there and an entry in `dialects.dialect_for`;
- `registry`: configured warehouses and sync status in the store; `service`: add, list,
  sync, status for the CLI, the JSON API and the UI; `runner`: the `serve` role that keeps
  every warehouse within an interval of the log.

This room imports `spec` and `store` only. docs/warehouse.md is the user's guide.
"""
