"""`SlackCallCounter`: counts every Slack Web API call of a client by method, for metrics.

A slack-sdk retry handler that never retries: slack-sdk shows each response to a client's retry
handlers in turn, so placed first it sees every call, 429s included, before the handlers that retry
them. What it counts goes to a `core.ports.PlatformCallObserver` (the runner's metrics).
"""

from __future__ import annotations

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from adapters.slack.translate import PLATFORM
from core.ports import PlatformCallObserver


class SlackCallCounter(AsyncRetryHandler):
    """Counts every Slack Web API response (and network error) by method; never asks for a retry."""

    def __init__(self, observer: PlatformCallObserver, bot: str) -> None:
        super().__init__(max_retry_count=1 << 30)
        self._observer = observer
        self._bot = bot

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest,
                               response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        method = request.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
        status: int | str = response.status_code if response is not None else "network_error"
        self._observer.platform_call(self._bot, PLATFORM, method, status)
        return False
