"""proxy tests."""
