"""Edit pacing per Discord channel, shared by every reply in that channel in this process.

Discord allows about 5 message edits per 5 s per channel (undocumented; discord.py reads the
`X-RateLimit-*` headers and waits when a bucket is empty), 50 requests/s per bot, and bans for a
while after 10,000 invalid requests (401/403/429) in 10 minutes. Ten replies streaming into one
channel would each be within a per-message interval and still flood the channel, so `ChannelPacer`
runs one edit per channel at a time, first come first served, each starting at least the interval
after the previous one *finished* — so Discord sees them at least that far apart whatever the
network latency, and while discord.py sits out a 429 no other reply edits that channel.
discord.py absorbs 429s by sleeping and retrying, so they never reach the sink; `rate_limit_trace`
sees them on the HTTP session instead, and after repeated 429s in a channel the pacer spaces that
channel's edits further (fewer edits, same final text), recovering slowly once the 429s stop.

At shutdown (`drain`) the spacing stops: ten replies cut short in one channel would otherwise queue
their final edits an interval apart and be killed by the disconnect half-written. Their final edits
then go out at once, and discord.py's own bucket handling (waiting out `X-RateLimit-*`, retrying
429s) is what keeps them within Discord's limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
import structlog

log = structlog.get_logger(__name__)

RATE_LIMIT_STRIKES = 2  # "repeated": this many 429s on one channel's messages within the window
RATE_LIMIT_WINDOW_S = 30.0
SLOWDOWN_FACTOR = 2.0  # each repeat doubles the channel's spacing ...
MAX_SLOWDOWN = 4.0  # ... up to 4x: ~one edit per 5 s per channel at the default 1.2 s
SLOWDOWN_RECOVERY_S = 60.0  # a channel free of 429s this long halves its slowdown again
IDLE_CHANNEL_FORGET_S = 600.0  # a channel not edited this long needs no state
MAX_TRACKED_CHANNELS = 10_000  # forgetting idle channels starts past this many
# POST /channels/{id}/messages and PATCH /channels/{id}/messages/{id}: a channel's message routes.
CHANNEL_MESSAGE_PATH = re.compile(r"/channels/(\d+)/messages(?:/\d+)?/?$")


@dataclass
class _ChannelState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_done_at: float | None = None
    slowdown: float = 1.0
    strikes: deque[float] = field(default_factory=deque)
    last_rate_limited_at: float | None = None


class ChannelPacer:
    """One edit at a time per channel, at least `interval_s` × the channel's slowdown after the last."""

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self._clock = clock
        self._channels: dict[int, _ChannelState] = {}
        self._draining = asyncio.Event()

    @property
    def draining(self) -> bool:
        """`drain` was called: the bot is shutting down."""
        return self._draining.is_set()

    def drain(self) -> None:
        """Shutdown: from now on edits skip the channel spacing, and an edit waiting out its
        interval goes at once. Edits already queued behind another still take turns, briefly."""
        self._draining.set()

    def slowdown(self, channel_id: int) -> float:
        """The channel's current multiplier of `interval_s` (1.0 unless it was rate-limited)."""
        state = self._channels.get(channel_id)
        if state is None:
            return 1.0
        self._recover(state, self._clock())
        return state.slowdown

    @asynccontextmanager
    async def turn(self, channel_id: int) -> AsyncIterator[None]:
        """Hold the channel's edit slot while the edit runs: entered once the interval since the
        channel's previous edit finished has passed. Waiters go in order."""
        state = self._state(channel_id)
        if self.draining:
            yield
            return
        async with state.lock:  # asyncio.Lock is FIFO: replies in a channel take turns
            self._recover(state, self._clock())
            if state.last_done_at is not None and not self.draining:
                delay = state.last_done_at + self.interval_s * state.slowdown - self._clock()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):  # the interval passed, or shutdown began
                        await asyncio.wait_for(self._draining.wait(), delay)
            try:
                yield
            finally:
                state.last_done_at = self._clock()

    def note_rate_limited(self, channel_id: int) -> None:
        """A request on this channel's messages got a 429."""
        state = self._state(channel_id)
        now = self._clock()
        state.last_rate_limited_at = now
        state.strikes.append(now)
        while state.strikes and now - state.strikes[0] > RATE_LIMIT_WINDOW_S:
            state.strikes.popleft()
        if len(state.strikes) >= RATE_LIMIT_STRIKES:
            state.strikes.clear()
            state.slowdown = min(MAX_SLOWDOWN, state.slowdown * SLOWDOWN_FACTOR)
            log.warning("discord.edits_slowed", channel=channel_id, slowdown=state.slowdown,
                        interval_s=round(self.interval_s * state.slowdown, 2))

    def _recover(self, state: _ChannelState, now: float) -> None:
        if state.slowdown > 1.0 and state.last_rate_limited_at is not None and (
            now - state.last_rate_limited_at >= SLOWDOWN_RECOVERY_S
        ):
            state.slowdown = max(1.0, state.slowdown / SLOWDOWN_FACTOR)
            state.last_rate_limited_at = now  # the next halving needs another quiet period

    def _state(self, channel_id: int) -> _ChannelState:
        state = self._channels.get(channel_id)
        if state is None:
            if len(self._channels) >= MAX_TRACKED_CHANNELS:
                self._forget_idle(self._clock())
            state = self._channels[channel_id] = _ChannelState()
        return state

    def _forget_idle(self, now: float) -> None:
        for channel_id, state in list(self._channels.items()):
            idle = state.last_done_at is None or now - state.last_done_at > IDLE_CHANNEL_FORGET_S
            if idle and not state.lock.locked() and state.slowdown == 1.0:
                del self._channels[channel_id]


def rate_limited_channel(method: str, path: str, status: int) -> int | None:
    """The channel whose message route answered 429, or None for anything else."""
    if status != 429 or method.upper() not in ("POST", "PATCH"):
        return None
    match = CHANNEL_MESSAGE_PATH.search(path)
    return int(match.group(1)) if match else None


def rate_limit_trace(pacer: ChannelPacer) -> aiohttp.TraceConfig:
    """An aiohttp trace for discord.py's HTTP session (`Client(http_trace=...)`), telling `pacer`
    about every 429 on a channel's message routes that discord.py will then quietly retry."""
    trace = aiohttp.TraceConfig()

    async def on_request_end(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        channel = rate_limited_channel(params.method, params.url.path, params.response.status)
        if channel is not None:
            pacer.note_rate_limited(channel)

    trace.on_request_end.append(on_request_end)
    return trace
