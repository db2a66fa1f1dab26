"""The machine itself, via psutil: CPU (total and per core), memory, swap, disk usage, and
disk and network throughput as rates between two polls.

Metric names (all without labels unless noted):
``system_cpu_percent``, ``system_cpu_core_percent{core}``, ``system_memory_used_bytes``,
``system_memory_total_bytes``, ``system_memory_percent``, ``system_swap_used_bytes``,
``system_swap_percent``, ``system_disk_used_bytes{mount}``, ``system_disk_percent{mount}``,
``system_disk_read_bytes_per_second``, ``system_disk_write_bytes_per_second``,
``system_net_recv_bytes_per_second``, ``system_net_sent_bytes_per_second``.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import psutil

from app.collector import Collector
from app.records import Record, Sample, labels_of

# (psutil counter attribute, metric name) for the counters turned into per-second rates
_DISK_RATES = (("read_bytes", "system_disk_read_bytes_per_second"),
               ("write_bytes", "system_disk_write_bytes_per_second"))
_NET_RATES = (("bytes_recv", "system_net_recv_bytes_per_second"),
              ("bytes_sent", "system_net_sent_bytes_per_second"))


class SystemCollector(Collector):
    """CPU, memory, swap, disk and network of this machine.

    Args:
        interval: seconds between polls.
        mounts: the filesystems whose usage is reported (default: the root and the data dir's).
    """

    kind = "system"

    def __init__(self, interval: float = 1.0, mounts: list[str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = "system"
        self.interval = interval
        self.mounts = mounts or ["/"]
        self.clock = clock
        self._last_counters: tuple[float, dict[str, float]] | None = None
        psutil.cpu_percent(percpu=True)  # prime psutil's per-call CPU deltas

    def poll(self) -> list[Record]:
        now = self.clock()
        out: list[Record] = []

        def add(name: str, value: float, **labels: object) -> None:
            out.append(Sample(name, float(value), now, labels_of(labels)))

        cores = psutil.cpu_percent(percpu=True)
        add("system_cpu_percent", sum(cores) / len(cores) if cores else 0.0)
        for i, pct in enumerate(cores):
            add("system_cpu_core_percent", pct, core=i)
        mem = psutil.virtual_memory()
        add("system_memory_used_bytes", mem.total - mem.available)
        add("system_memory_total_bytes", mem.total)
        add("system_memory_percent", mem.percent)
        swap = psutil.swap_memory()
        add("system_swap_used_bytes", swap.used)
        add("system_swap_percent", swap.percent)
        for mount in self.mounts:
            try:
                usage = psutil.disk_usage(mount)
            except OSError:
                continue
            add("system_disk_used_bytes", usage.used, mount=mount)
            add("system_disk_percent", usage.percent, mount=mount)
        out.extend(self._rates(now))
        return out

    def _rates(self, now: float) -> list[Record]:
        counters: dict[str, float] = {}
        disk = psutil.disk_io_counters()
        if disk is not None:
            counters.update({name: getattr(disk, attr) for attr, name in _DISK_RATES})
        net = psutil.net_io_counters()
        if net is not None:
            counters.update({name: getattr(net, attr) for attr, name in _NET_RATES})
        mono = time.monotonic()
        previous, self._last_counters = self._last_counters, (mono, counters)
        if previous is None:
            return []  # a rate needs two polls
        elapsed = mono - previous[0]
        if elapsed <= 0:
            return []
        # A counter that went down wrapped or was reset (device replugged): skip that one.
        return [Sample(name, (value - previous[1][name]) / elapsed, now)
                for name, value in counters.items()
                if name in previous[1] and value >= previous[1][name]]
