"""The psutil collector on this very machine."""
from __future__ import annotations

import psutil

from app.records import Sample
from collectors.system import SystemCollector


def by_name(samples: list) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.name, []).append(s)
    return out


def test_first_poll_reports_sane_machine_values() -> None:
    first = by_name(SystemCollector().poll())
    assert 0.0 <= first["system_cpu_percent"][0].value <= 100.0
    cores = first["system_cpu_core_percent"]
    assert len(cores) == psutil.cpu_count()
    assert sorted(dict(s.labels)["core"] for s in cores) == sorted(str(i) for i in range(len(cores)))
    total = first["system_memory_total_bytes"][0].value
    assert total == psutil.virtual_memory().total
    assert 0 < first["system_memory_used_bytes"][0].value < total
    assert 0.0 < first["system_memory_percent"][0].value < 100.0
    assert dict(first["system_disk_percent"][0].labels) == {"mount": "/"}
    # rates need two polls: the first one must not invent them
    assert "system_net_recv_bytes_per_second" not in first


def test_second_poll_reports_non_negative_rates() -> None:
    collector = SystemCollector()
    collector.poll()
    second = by_name(collector.poll())
    for name in ("system_disk_read_bytes_per_second", "system_disk_write_bytes_per_second",
                 "system_net_recv_bytes_per_second", "system_net_sent_bytes_per_second"):
        if name.startswith("system_disk") and psutil.disk_io_counters() is None:
            continue  # containers without block-device stats
        assert name in second, name
        assert second[name][0].value >= 0.0
