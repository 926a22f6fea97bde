"""Benchmarks for async-db: our wrapper against bare psycopg 3, same process.

Run with ``python -m benchmarks`` (see ``python -m benchmarks --help``). The
database is ``$ASYNC_DB_DSN`` when set, otherwise an embedded throwaway
PostgreSQL server started for the run and deleted after it.

Every scenario follows the same rules so that its numbers can be compared:

* both contenders run in the same process, on the same event loop, against the
  same server, with the same connection settings;
* contenders alternate inside every round, and the order is swapped on every
  other round, so drift (CPU frequency, server caches, other load) hits both;
* a warm-up batch runs first and is not recorded;
* each round's per-query time is recorded; medians, spreads and the ratio of
  ours to psycopg are reported, never a single best run.

Modules: :mod:`benchmarks.micro` (sequential round trips, one task, one
connection) and :mod:`benchmarks._harness` (timing, statistics, tables, JSON)
for scenarios to share.
"""
