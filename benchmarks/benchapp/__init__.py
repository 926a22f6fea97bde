"""A minimal Django app for the ORM contender (``Item.objects.aget(pk=...)``).

Its table is the benchmark's point-lookup table, created and dropped by the
benchmark itself (``benchmarks._env``), so no migrations are involved.
"""
