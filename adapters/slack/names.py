"""`UserNames`: Slack user ids → the names people see, for multi-user prompts ("[ada] question").

Looked up with `users.info` (Tier 4) and remembered, so a busy channel costs one call per person per
hour. A failed lookup never costs the answer: the id stands in for the name.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = structlog.get_logger(__name__)

NAME_TTL_S = 3600.0  # people rarely rename themselves; an hour-old name is fine in a prompt
NAME_CACHE_MAX = 5000  # names kept per bot; a large workspace's active people fit
LOOKUP_TIMEOUT_S = 2.0  # a slow users.info must not hold up the answer
MAX_CONCURRENT_LOOKUPS = 8  # a seeded thread with many people: at most this many calls at once


class UserNames:
    """Display names by user id, cached with a TTL."""

    def __init__(
        self, client: AsyncWebClient, *, clock: Callable[[], float] = time.monotonic,
        turn: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._client = client
        self._turn = turn  # the workspace's users.info budget: False means skip this lookup
        self._clock = clock
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._in_flight: dict[str, asyncio.Task[str | None]] = {}  # one users.info per person at a time
        self._gate = asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)

    def cached(self, user_id: str) -> str | None:
        """The name if it is known and fresh; never calls Slack."""
        cached = self._cache.get(user_id)
        if cached is None or self._clock() - cached[1] >= NAME_TTL_S:
            return None
        self._cache.move_to_end(user_id)
        return cached[0]

    async def name(self, user_id: str) -> str:
        known = self.cached(user_id)
        if known is not None:
            return known
        lookup = self._in_flight.get(user_id)
        if lookup is None:
            lookup = asyncio.create_task(self._lookup(user_id), name=f"slack-users-info-{user_id}")
            self._in_flight[user_id] = lookup
            lookup.add_done_callback(lambda _: self._in_flight.pop(user_id, None))
        name = await asyncio.shield(lookup)  # one waiter giving up must not cancel the others' lookup
        if name is None:
            return user_id
        self._cache[user_id] = (name, self._clock())
        self._cache.move_to_end(user_id)
        while len(self._cache) > NAME_CACHE_MAX:
            self._cache.popitem(last=False)
        return name

    async def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        unique = sorted(set(user_ids))
        found = await asyncio.gather(*(self.name(u) for u in unique))
        return dict(zip(unique, found, strict=True))

    async def _lookup(self, user_id: str) -> str | None:
        if self._turn is not None and not await self._turn():
            log.info("slack.user_lookup_skipped", user=user_id, reason="users.info budget queued up")
            return None
        try:
            async with self._gate:
                response = await asyncio.wait_for(self._client.users_info(user=user_id), LOOKUP_TIMEOUT_S)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("slack.user_lookup_failed", user=user_id, error=type(exc).__name__)
            return None
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        for candidate in (profile.get("display_name"), profile.get("real_name"), user.get("real_name"),
                          user.get("name")):
            if isinstance(candidate, str) and candidate.strip():
                return candidate.strip()
        return None
