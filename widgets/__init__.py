"""Qt widgets: they render what the hub and store hold and forward user intent, nothing more."""
