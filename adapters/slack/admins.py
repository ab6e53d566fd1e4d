"""`SlackAdmins`: who may change a channel's persona with `/lunos` (`core.personas`).

An admin is a user id listed in the bot's definition (`engine.profile.personas.admins`), or a
workspace admin or owner as `users.info` says (`is_admin`, `is_owner`, `is_primary_owner`). The
answer is remembered briefly, so a burst of commands costs one lookup, and a demoted admin loses
the right within a minute. A lookup that fails, times out or is refused by the workspace's
`users.info` budget means "not an admin": a change is never allowed on a guess.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = structlog.get_logger(__name__)

ADMIN_TTL_S = 60.0  # short: an admin removed in Slack should not keep the right for long
ADMIN_CACHE_MAX = 1000  # people whose status is remembered per bot
LOOKUP_TIMEOUT_S = 2.0  # one users.info; the command was acked already, but the user is waiting
ADMIN_FLAGS = ("is_admin", "is_owner", "is_primary_owner")  # users.info's workspace roles


class SlackAdmins:
    """Workspace admins and owners by user id, plus the definition's own list."""

    def __init__(
        self, client: AsyncWebClient, *, listed: Collection[str],
        turn: Callable[[], Awaitable[bool]] | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._listed = frozenset(listed)
        self._turn = turn  # the workspace's users.info budget: False means skip the lookup
        self._clock = clock
        self._cache: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    async def is_admin(self, user_id: str) -> bool:
        if user_id in self._listed:
            return True
        cached = self._cache.get(user_id)
        if cached is not None and self._clock() - cached[1] < ADMIN_TTL_S:
            return cached[0]
        found = await self._lookup(user_id)
        if found is None:
            return False  # not remembered: the next command asks again
        self._cache[user_id] = (found, self._clock())
        self._cache.move_to_end(user_id)
        while len(self._cache) > ADMIN_CACHE_MAX:
            self._cache.popitem(last=False)
        return found

    async def _lookup(self, user_id: str) -> bool | None:
        if self._turn is not None and not await self._turn():
            log.info("slack.admin_lookup_skipped", user=user_id, reason="users.info budget queued up")
            return None
        try:
            response = await asyncio.wait_for(self._client.users_info(user=user_id), LOOKUP_TIMEOUT_S)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("slack.admin_lookup_failed", user=user_id, error=type(exc).__name__)
            return None
        user = response.get("user")
        if not isinstance(user, dict):
            return None
        return any(user.get(flag) is True for flag in ADMIN_FLAGS)
