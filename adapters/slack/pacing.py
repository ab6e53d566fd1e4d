"""How fast one Slack app may call a rate-limited method in one workspace: `EditPacing` (the numbers)
and `WorkspacePacer` (waiting for a turn), drawn from `core.rate_budget`'s shared Redis buckets.

Slack counts Tier 3 methods such as `chat.update` per app, per workspace, per minute, across every
reply and every replica; the bucket name says exactly that (`slack:<app>:<team>:<method>`).
Nothing here talks to Slack.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from core.rate_budget import BucketSpec, RateBudget

SLACK_TIER3_PER_MINUTE = 50  # chat.update is Tier 3: about 50 calls a minute per workspace per app
SLACK_RATE_WINDOW_S = 60.0  # Slack counts calls over a minute
# Spend 90%: a call reserved now reaches Slack a little later, so calls bunch up slightly at Slack's end.
PACING_HEADROOM = 0.1
# Back-to-back calls allowed before the steady rate applies: small, so one burst cannot spend the minute.
PACING_BURST = 5
# An in-progress edit that would wait longer than this for its turn is skipped (a later or the final
# edit carries its text), which keeps the queue short for the final edits that must land.
SHED_AFTER_S = 2.0


@dataclass(frozen=True)
class EditPacing:
    """A budget of `per_window` calls every `window_s` seconds, of which `headroom` stays unused.

    Tests shrink `window_s` (with the fake Slack's clock scaled to match) to run a minute in a second.
    """

    per_window: int = SLACK_TIER3_PER_MINUTE
    window_s: float = SLACK_RATE_WINDOW_S
    headroom: float = PACING_HEADROOM
    burst: int = PACING_BURST
    shed_after_s: float = SHED_AFTER_S

    def __post_init__(self) -> None:
        if self.per_window < 2 or self.window_s <= 0:
            raise ValueError("a budget needs at least 2 calls per window and a positive window")
        if not 0 <= self.headroom < 1:
            raise ValueError("headroom is a fraction in [0, 1)")

    def bucket(self) -> BucketSpec:
        """A token bucket that never exceeds the budget in any window: burst + rate × window ≤ usable."""
        usable = self.per_window * (1 - self.headroom)
        burst = max(1.0, min(float(self.burst), usable / 2))
        return BucketSpec(capacity=burst, refill_per_s=(usable - burst) / self.window_s)


class WorkspacePacer:
    """Turns for one Slack app in one workspace, per method, shared with every replica."""

    def __init__(self, budget: RateBudget, pacing: EditPacing, *, app_id: str, team_id: str) -> None:
        self._budget = budget
        self._pacing = pacing
        self._spec = pacing.bucket()
        self._prefix = f"slack:{app_id}:{team_id}"

    @property
    def pacing(self) -> EditPacing:
        return self._pacing

    async def wait_for_turn(self, method: str, *, must_land: bool) -> bool:
        """Wait until one call to `method` may go out. A call that must land always gets a turn;
        any other returns False at once, taking nothing, when its turn is over `shed_after_s` away."""
        wait = await self._budget.reserve(
            f"{self._prefix}:{method}", self._spec,
            max_wait_s=None if must_land else self._pacing.shed_after_s,
        )
        if wait is None:
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True
