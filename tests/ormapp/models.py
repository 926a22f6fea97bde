"""Models of the ORM tests (filled in by the native ORM work)."""
