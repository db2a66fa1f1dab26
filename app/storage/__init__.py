"""Storage: the one SQLite file. ``store`` owns the writer thread, ``schema`` the migrations,
``queries`` and ``history`` the read side for charts, ``sessions`` the session list and its
edits. Nothing here imports Qt."""
