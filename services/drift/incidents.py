"""Debounced incidents: a detector opens one only after ``open_after`` consecutive windows above
its upper threshold, keeps it open (UPDATE) while windows stay above the lower threshold, and
closes it after ``close_after`` consecutive windows below the lower threshold (hysteresis, so a
statistic hovering at the threshold does not flap)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

__all__ = ["Debouncer", "Transition"]

Transition = Literal["OPEN", "UPDATE", "CLOSED"] | None


@dataclass
class Debouncer:
    open_after: int = 3
    close_after: int = 3
    above: int = 0
    below: int = 0
    incident: str = ""

    @property
    def is_open(self) -> bool:
        return bool(self.incident)

    def step(self, value: float, upper: float, lower: float) -> Transition:
        """Feed one window's statistic; returns what happened to the incident, if anything."""
        if not self.is_open:
            self.above = self.above + 1 if value > upper else 0
            return "OPEN" if self.above >= self.open_after else None
        if value < lower:
            self.below += 1
            if self.below >= self.close_after:
                return "CLOSED"
            return None
        self.below = 0
        return "UPDATE" if value > upper else None

    def opened(self) -> str:
        self.incident = uuid.uuid4().hex[:12]
        self.above = self.below = 0
        return self.incident

    def reject(self) -> None:
        """The confirmation test did not confirm: start counting again."""
        self.above = 0

    def closed(self) -> str:
        incident, self.incident = self.incident, ""
        self.above = self.below = 0
        return incident
