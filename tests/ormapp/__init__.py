"""Models for the native ORM tests (issue 11): a test app installed by tests/fix_db.py."""
