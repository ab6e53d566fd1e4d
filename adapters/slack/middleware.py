"""`DropIgnoredEvents`: the Bolt middleware that acknowledges and drops every event a bot must not
answer — another app's, its own, other bots', edits, deletes, joins — so listeners never test for them.

The decision is `translate.drop_reason`, a pure function; this class only plugs it into Bolt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from adapters.slack.translate import SlackIdentity, drop_reason

log = structlog.get_logger(__name__)


class DropIgnoredEvents(AsyncMiddleware):
    """Acks (so Slack does not retry) and stops events `drop_reason` rejects; passes the rest on."""

    def __init__(self, identity: SlackIdentity, *, bot: str) -> None:
        self._identity = identity
        self._bot = bot
        self.dropped: dict[str, int] = {}  # reason → count, for tests and debugging

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],  # Bolt passes it by this name
    ) -> BoltResponse | None:
        reason = drop_reason(req.body, self._identity)
        if reason is None:
            return await next()
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        log.debug("slack.event_dropped", bot=self._bot, reason=reason, event_id=req.body.get("event_id"))
        ack: BoltResponse = await req.context.ack()
        return ack
