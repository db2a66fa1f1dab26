"""The injected clock of the tests: UTC epoch seconds that move only when a test moves them, so
"an hour later" or "two days apart" takes no time and every timestamp is known exactly."""
from __future__ import annotations


class FakeClock:
    """Call it for the time; set or :meth:`advance` ``t`` to move it.

    >>> clock = FakeClock(100.0); clock.advance(5); clock()
    105.0
    """

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
