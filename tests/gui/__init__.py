"""gui tests."""
