"""A rate as the settings write it, e.g. `20/second` (no dependencies: the settings import it)."""

import math
import re
from dataclasses import dataclass

_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour)\s*")


@dataclass(frozen=True)
class Rate:
    requests: int
    period: float  # seconds

    @classmethod
    def parse(cls, text: str) -> "Rate":
        match = _RATE.fullmatch(text)
        if match is None or int(match[1]) < 1:
            raise ValueError("expected N/second, N/minute or N/hour with N >= 1, e.g. 20/second")
        return cls(int(match[1]), _PERIODS[match[2]])

    @property
    def interval(self) -> float:
        """Seconds between two requests at the sustained rate."""
        return self.period / self.requests


def retry_after(wait: float) -> int:
    """Retry-After in whole seconds, at least 1 (a client retrying sooner is refused again)."""
    return max(1, math.ceil(wait))
