"""`RedisCircuit`: after Redis fails, skip it for a short cool-down.

Without it a dead Redis costs every turn one connect timeout per call (dedupe, lock, load,
save, usage); with it the first failure opens the circuit and later calls fail at once until
the cool-down passes and one call probes Redis again. Shared by every Redis-backed store.
"""

from __future__ import annotations

import time
from collections.abc import Callable

REDIS_COOL_DOWN_S = 5.0  # long enough to spare turns the timeouts, short enough to notice recovery


class RedisCircuit:
    """Open (skip Redis) for `cool_down_s` after a failure; closed again after a success."""

    def __init__(
        self, cool_down_s: float = REDIS_COOL_DOWN_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cool_down_s = cool_down_s
        self._clock = clock
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._clock() < self._open_until

    def record_failure(self) -> None:
        self._open_until = self._clock() + self._cool_down_s

    def record_success(self) -> None:
        self._open_until = 0.0
