"""The fleet: llmmon on many machines, read back through a Prometheus that scrapes them all.

``client`` talks to the Prometheus HTTP API, ``model`` turns its answers into machines and
chart series, ``poller`` asks on a thread of its own so the window never waits for it.
Qt-free, like the rest of ``app/``.
"""
