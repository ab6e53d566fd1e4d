"""Proving a Slack app-level token before Socket Mode is handed to slack-bolt.

slack-sdk's Socket Mode client calls `apps.connections.open` inside a loop that retries every
failure forever, logging a traceback each time: a revoked or mistyped `xapp-` token would never
surface as a start failure. One call here, before the handler connects, turns the answer Slack
gives into a `PlatformError` that names the token and the fix. The same call serves
`lunos-bots check`. Nothing here keeps a connection open.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.sink import NETWORK_ERRORS, error_code
from core.errors import PlatformError

# Slack's answers that mean "this app token will never work as it is": no retry can help.
APP_TOKEN_REFUSALS = frozenset({
    "invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive",
    "not_allowed_token_type", "missing_scope",
})
PROBE_TIMEOUT_S = 10  # one Web API call; a start is retried by the runner anyway


class AppTokenRejected(PlatformError):
    """Slack refused the app-level token (`[slack].app_token`)."""


async def open_socket_url(api_url: str, app_token: str, *, bot: str) -> str:
    """Call `apps.connections.open` once with `app_token`; return the WebSocket URL Slack issued.

    Raises `AppTokenRejected` when Slack refuses the token, and `PlatformError` when Slack cannot
    be reached or answers with another error."""
    client = AsyncWebClient(base_url=api_url, timeout=PROBE_TIMEOUT_S, retry_handlers=[])
    try:
        response = await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        code = error_code(exc)
        if code in APP_TOKEN_REFUSALS:
            scope = " (it needs the connections:write scope)" if code == "missing_scope" else ""
            raise AppTokenRejected(
                f"slack bot {bot!r}: app_token rejected by apps.connections.open ({code}); "
                f"check [slack].app_token{scope}, an app-level token starting xapp-") from exc
        raise PlatformError(f"slack bot {bot!r}: apps.connections.open failed ({code})") from exc
    except NETWORK_ERRORS as exc:
        raise PlatformError(f"slack bot {bot!r}: Slack API unreachable at {api_url} "
                            f"({error_code(exc)})") from exc
    return str(response["url"])
