"""Benchmarks for async-db, side by side with the alternatives, in one run.

Contenders: a raw ``psycopg_pool`` pool (the limit for a psycopg-based
design), async-db pooled and unpooled, Django's sync connection through
``sync_to_async`` and the ORM's ``aget()`` (the status quo), and an asyncpg
pool (the fast-driver reference).

Run with ``python -m benchmarks`` (see ``python -m benchmarks --help``). The
database is ``$ASYNC_DB_DSN`` when set, otherwise an embedded throwaway
PostgreSQL server started for the run and deleted after it.

Every scenario follows the same rules so that its numbers can be compared:

* all contenders run in the same process, on the same event loop, against the
  same server, with the same connection settings;
* contenders alternate inside every round, and the order is swapped on every
  other round, so drift (CPU frequency, server caches, other load) hits both;
* a warm-up batch runs first and is not recorded;
* each round's per-query time is recorded; medians, spreads and the ratio of
  ours to psycopg are reported, never a single best run.

Scenarios: ``micro`` (our cursor against bare psycopg), ``latency``,
``concurrency`` (K tasks, throughput and peak server backends), ``orm`` (the
native ORM's ``aget()`` against Django's and a raw cursor), ``transactions``,
``fanout`` (sequential against ``gather``) and ``http`` (a Django site under
uvicorn, async-db's raw SQL and native ORM views against Django's ORM views,
``benchmarks/http/``). Shared code:
``_harness`` (timing, statistics, tables, JSON), ``_env``, ``_contenders``,
``_summary`` (the closing summary), ``_plot``.
"""
