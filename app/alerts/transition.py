"""What the alert engine hands its listeners (the notifier, the GUI): one change of one alert.

Its own module so the engine (which makes them) and the notifier (which reads them) both
import it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass

from app.records import AlertEvent


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of one alert, as the notifier and the GUI see it."""

    event: AlertEvent
    title: str
    notify: bool     # False for pending/cleared, acknowledge/snooze, snoozed and cooling alerts
    hint: str = ""   # the rule's "what to do"
