"""Async twins of ``django.db.models.fields`` code that executes queries.

``related_descriptors``: the async methods of Django's related managers
(reverse foreign key and many-to-many) and the evaluation steps of the
prefetchers' ``get_prefetch_querysets()``.
"""
