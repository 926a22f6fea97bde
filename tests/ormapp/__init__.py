"""The native ORM tests' app (issue 11), installed by tests/fix_db.py."""
