"""Session engines whose async methods are native."""
