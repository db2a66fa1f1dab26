"""collectors tests."""
