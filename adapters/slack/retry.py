"""`BudgetedRateLimitRetry`: slack-sdk's own 429 retry (wait `Retry-After`, call again), which first
tells the shared workspace budget, so other replies and replicas back off too instead of running
into the same 429.

Which budget a call is charged to is set by the caller (`WorkspacePacer.charging`); calls outside
such a block (users.info, conversations.replies…) are retried the same way and hold nothing back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from adapters.slack.pacing import report_rate_limited

DEFAULT_RETRY_AFTER_S = 1.0  # what slack-sdk waits when a 429 names no Retry-After


def retry_after_s(headers: Mapping[str, Any] | None) -> float | None:
    """The `Retry-After` header in seconds, or None when absent or unreadable. Values may be lists
    (slack-sdk's retry handlers see them so) or plain strings (a response's headers)."""
    for name, values in (headers or {}).items():
        if name.lower() == "retry-after":
            raw = values[0] if isinstance(values, list | tuple) and values else values
            try:
                return max(0.0, float(str(raw)))
            except ValueError:
                return None
    return None


class BudgetedRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack-sdk's `AsyncRateLimitErrorRetryHandler`, reporting each 429 before sleeping it off."""

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is not None:
            await report_rate_limited(retry_after_s(response.headers) or DEFAULT_RETRY_AFTER_S)
        await super().prepare_for_next_attempt_async(state=state, request=request, response=response,
                                                     error=error)
