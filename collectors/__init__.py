"""One module per monitored source; none of them imports Qt, SQLite or the alert engine."""
