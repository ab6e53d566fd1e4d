"""How fast one Slack app may call a rate-limited method in one workspace: `EditPacing` (the numbers)
and `WorkspacePacer` (waiting for a turn, and backing off after a 429), drawn from
`core.rate_budget`'s shared Redis buckets.

Slack counts Tier 3 methods such as `chat.update` and `reactions.add` per app, per workspace, per
minute, across every reply and every replica; the bucket name says exactly that
(`slack:<app>:<team>:<method>`). `chat.postMessage` is limited per channel instead
(`slack:<app>:<team>:chat.postMessage:<channel>`). Nothing here talks to Slack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from core.rate_budget import BucketSpec, RateBudget

SLACK_TIER3_PER_MINUTE = 50  # chat.update is Tier 3: about 50 calls a minute per workspace per app
SLACK_RATE_WINDOW_S = 60.0  # Slack counts calls over a minute
# Spend 90%: a call reserved now reaches Slack a little later, so calls bunch up slightly at Slack's end.
PACING_HEADROOM = 0.1
# Back-to-back calls allowed before the steady rate applies. It is also how many replies may stream
# by edits at once in a workspace (each is admitted only while a token is kept for its final edit),
# so it is a fifth of the minute: enough for a team's ordinary traffic, and the rest still refills
# at ~35 calls a minute.
PACING_BURST = 10
# An admitted reply's claim on its final edit lapses unless renewed this often (each progress edit
# renews it), so a replica that dies mid-reply frees its claim.
EDIT_CLAIM_TTL_S = 120.0
# An in-progress edit that would wait longer than this for its turn is skipped (a later or the final
# edit carries its text), which keeps the queue short for the final edits that must land.
SHED_AFTER_S = 2.0
# A working reaction that cannot go out within this long is skipped: by then the first text is near,
# and every reaction skipped is also a reactions.remove saved.
SIGNAL_SHED_AFTER_S = 0.3
SLACK_POSTS_PER_CHANNEL_PER_S = 1.0  # chat.postMessage: "1 per second per channel", short bursts allowed
# Two posts at once, then the rate less the headroom: a post given its turn reaches Slack a little
# later, and calls that bunch up on the way would otherwise meet Slack's own bucket empty.
POST_BURST = 2
SLACK_TIER4_PER_MINUTE = 100  # users.info: Tier 4, per workspace per app
LOOKUP_SHED_AFTER_S = 0.5  # a name lookup that would wait longer is skipped (the user id stands in)

# A 429 observed inside a call (slack-sdk's retry handler) pushes back the bucket that call was
# charged to; set around a paced call by `WorkspacePacer.charging`. A context variable because
# slack-sdk's handler is built once per client and only sees the request, not which reply sent it.
RateLimitListener = Callable[[float], Awaitable[None]]
_charged_to: ContextVar[RateLimitListener | None] = ContextVar("slack_rate_limit_listener", default=None)


async def report_rate_limited(retry_after_s: float) -> None:
    """Slack answered 429 to the call running in this context: hold back its bucket (if any)."""
    listener = _charged_to.get()
    if listener is not None:
        await listener(retry_after_s)


@dataclass(frozen=True)
class EditPacing:
    """A budget of `per_window` calls every `window_s` seconds, of which `headroom` stays unused,
    for each Tier 3 method (`chat.update`, `chat.appendStream`, reactions); and the per-channel
    budget of `chat.postMessage`.

    Tests shrink `window_s` (with the fake Slack's clock scaled to match) to run a minute in a second.
    """

    per_window: int = SLACK_TIER3_PER_MINUTE
    window_s: float = SLACK_RATE_WINDOW_S
    headroom: float = PACING_HEADROOM
    burst: int = PACING_BURST
    shed_after_s: float = SHED_AFTER_S
    signal_shed_after_s: float = SIGNAL_SHED_AFTER_S
    posts_per_s: float = SLACK_POSTS_PER_CHANNEL_PER_S
    post_burst: int = POST_BURST

    def __post_init__(self) -> None:
        if self.per_window < 2 or self.window_s <= 0:
            raise ValueError("a budget needs at least 2 calls per window and a positive window")
        if not 0 <= self.headroom < 1:
            raise ValueError("headroom is a fraction in [0, 1)")
        if self.posts_per_s <= 0 or self.post_burst < 1:
            raise ValueError("posts need a positive rate and a burst of at least 1")

    def bucket(self) -> BucketSpec:
        """A token bucket that never exceeds the budget in any window: burst + rate × window ≤ usable."""
        usable = self.per_window * (1 - self.headroom)
        burst = max(1.0, min(float(self.burst), usable / 2))
        return BucketSpec(capacity=burst, refill_per_s=(usable - burst) / self.window_s)

    def post_bucket(self) -> BucketSpec:
        """One channel's `chat.postMessage` bucket, `headroom` below Slack's rate."""
        rate = self.posts_per_s * (1 - self.headroom)
        return BucketSpec(capacity=float(self.post_burst), refill_per_s=rate)

    def lookup_bucket(self) -> BucketSpec:
        """`users.info` (Tier 4), scaled like the Tier 3 budget (tests shrink the window)."""
        usable = SLACK_TIER4_PER_MINUTE * (1 - self.headroom)
        burst = min(float(self.burst), usable / 2)
        return BucketSpec(capacity=burst, refill_per_s=(usable - burst) / self.window_s)


class WorkspacePacer:
    """Turns for one Slack app in one workspace, per method (posts: per channel), shared with every
    replica."""

    def __init__(self, budget: RateBudget, pacing: EditPacing, *, app_id: str, team_id: str) -> None:
        self._budget = budget
        self._pacing = pacing
        self._spec = pacing.bucket()
        self._post_spec = pacing.post_bucket()
        self._prefix = f"slack:{app_id}:{team_id}"

    @property
    def pacing(self) -> EditPacing:
        return self._pacing

    async def wait_for_turn(self, method: str, *, must_land: bool, shed_after_s: float | None = None) -> bool:
        """Wait until one call to `method` may go out. A call that must land always gets a turn;
        any other returns False at once, taking nothing, when its turn is over `shed_after_s`
        (default: the pacing's) away."""
        return await _spend(await self.reserve(method, must_land=must_land, shed_after_s=shed_after_s))

    async def reserve(
        self, method: str, *, must_land: bool, shed_after_s: float | None = None,
    ) -> float | None:
        """`wait_for_turn` without the waiting: the seconds until the turn, or None (skipped)."""
        limit = self._pacing.shed_after_s if shed_after_s is None else shed_after_s
        return await self._budget.reserve(self._name(method), self._spec,
                                          max_wait_s=None if must_land else limit)

    async def admit_edits(self, method: str, holder: str) -> bool:
        """Whether reply `holder` may grow by `method` (chat.update): only while the budget keeps a
        token for the final edit of every reply already admitted, and one for this one."""
        return await self._budget.admit(self._name(method), self._spec, holder, ttl_s=EDIT_CLAIM_TTL_S)

    async def spare_turn(self, method: str, holder: str) -> bool:
        """A progress edit of an admitted reply: now, from what no admitted reply's final edit
        needs, or not at all (a later or the final edit carries its text)."""
        return await self._budget.take_spare(self._name(method), self._spec, holder,
                                             ttl_s=EDIT_CLAIM_TTL_S)

    async def release_edits(self, method: str, holder: str) -> None:
        await self._budget.release(self._name(method), holder)

    async def wait_to_post(self, channel: str) -> None:
        """Every post waits for the channel's turn: Slack allows about one a second per channel
        with short bursts, and a post it refuses costs more than one that waits."""
        await _spend(await self._budget.reserve(self._post_name(channel), self._post_spec))

    async def lookup_turn(self) -> bool:
        """A `users.info` call may go now or soon; False: skip it (the id stands in for the name)."""
        wait = await self._budget.reserve(self._name("users.info"), self._pacing.lookup_bucket(),
                                          max_wait_s=LOOKUP_SHED_AFTER_S)
        return await _spend(wait)

    async def hold(self, method: str, seconds: float) -> None:
        """Slack answered 429 with `Retry-After: seconds`: make every later caller of `method`, in
        any reply and any replica, wait at least that long."""
        await self._hold(self._name(method), self._spec, seconds)

    async def hold_posts(self, channel: str, seconds: float) -> None:
        await self._hold(self._post_name(channel), self._post_spec, seconds)

    @contextmanager
    def charging(self, method: str, *, channel: str | None = None) -> Iterator[None]:
        """Within this block a 429 that slack-sdk retries by itself still holds back the bucket."""

        async def listener(seconds: float) -> None:
            if channel is None:
                await self.hold(method, seconds)
            else:
                await self.hold_posts(channel, seconds)

        token = _charged_to.set(listener)
        try:
            yield
        finally:
            _charged_to.reset(token)

    def _name(self, method: str) -> str:
        return f"{self._prefix}:{method}"

    def _post_name(self, channel: str) -> str:
        return f"{self._prefix}:chat.postMessage:{channel}"

    async def _hold(self, name: str, spec: BucketSpec, seconds: float) -> None:
        # A per-minute limit never asks for more than a minute: bound a wild Retry-After.
        await self._budget.hold(name, spec, min(seconds, self._pacing.window_s))


async def _spend(wait: float | None) -> bool:
    if wait is None:
        return False
    if wait > 0:
        await asyncio.sleep(wait)
    return True
