"""The CPU packages' energy counters (Intel RAPL through the Linux powercap interface, also
used for AMD CPUs), so a machine without an NVIDIA GPU still gets joules per token.

Each top-level zone ``/sys/class/powercap/intel-rapl:N`` (a CPU package; its ``:N:M``
sub-zones are parts of it and are not added again) has ``energy_uj``, microjoules since some
point, which wraps to zero after ``max_energy_range_uj``. The collector turns each into a
counter of joules since llmmon started watching: an increase is ``new - old``, or
``new + range - old`` when the reading went down (a wrap). One wrap between two readings is
all it can see; at 1 s readings a package would need megawatts to wrap twice.

Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694): without permission,
or without RAPL (a VM, an ARM machine), the source is ABSENT with the reason, and the energy
per token falls back to what else was recorded, or is not shown.

Emits ``cpu_energy_joules_total{zone}`` (``zone`` is the zone's ``name``, e.g. ``package-0``).
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.collector import Collector
from app.records import Health, HealthState, Record, Sample, labels_of

log = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")
_PACKAGE = re.compile(r"^intel-rapl:\d+$")


@dataclass
class _Zone:
    name: str
    path: Path
    range_uj: int
    last_uj: int | None = None
    joules: float = 0.0


def wrapped_increase(old: int, new: int, range_uj: int) -> int:
    """Microjoules between two readings of a counter that wraps after ``range_uj``.

    >>> wrapped_increase(100, 250, 1000), wrapped_increase(900, 50, 1000)
    (150, 150)
    """
    return new - old if new >= old else new + range_uj - old


class CpuEnergyCollector(Collector):
    """The RAPL package zones under ``root`` (tests pass a folder laid out the same way)."""

    kind = "cpu_energy"

    def __init__(self, root: Path = POWERCAP, interval: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = "cpu_energy"
        self.root = root
        self.interval = interval
        self.clock = clock
        self._zones: list[_Zone] | None = None
        self._absent = ""

    def _find_zones(self) -> None:
        zones = []
        reasons = []
        try:
            candidates = sorted(p for p in self.root.iterdir() if _PACKAGE.match(p.name))
        except OSError:
            candidates = []
        for path in candidates:
            try:
                name = (path / "name").read_text().strip() or path.name
                range_uj = int((path / "max_energy_range_uj").read_text())
                int((path / "energy_uj").read_text())
            except PermissionError:
                reasons.append(f"{path / 'energy_uj'} is readable by root only")
                continue
            except (OSError, ValueError) as exc:
                reasons.append(f"{path.name}: {exc}")
                continue
            zones.append(_Zone(name, path, range_uj))
        self._zones = zones
        if not zones:
            self._absent = "No CPU energy counters: " + ("; ".join(reasons) if reasons else
                                                         f"no RAPL zones under {self.root}")
            log.info("%s; energy per token needs a GPU's readings instead", self._absent)

    def poll(self) -> list[Record]:
        now = self.clock()
        if self._zones is None:
            self._find_zones()
        if self._absent:
            return [Health(self.name, HealthState.ABSENT, now, reason=self._absent, kind=self.kind)]
        out: list[Record] = []
        for zone in self._zones or []:
            try:
                reading = int((zone.path / "energy_uj").read_text())
            except (OSError, ValueError) as exc:
                log.debug("%s: %s", zone.path, exc)
                continue
            if zone.last_uj is not None:
                zone.joules += wrapped_increase(zone.last_uj, reading, zone.range_uj) / 1e6
            zone.last_uj = reading
            out.append(Sample("cpu_energy_joules_total", zone.joules, now, labels_of(zone=zone.name)))
        out.append(Health(self.name, HealthState.UP, now, kind=self.kind))
        return out
