"""`SlackFinaliser`: the reply journal's way back to a Slack reply, from any replica running the bot.

The journal records where a reply lives (`SlackReplySink.journal_target`: channel, thread, the
user's message that carries the working reaction); a sweeper that finds the reply's owner gone, or
its final edit refused for longer than the turn could wait, edits or posts through this. One call
per method: the sweeper retries with backoff. Text is neutralised like every other outgoing text.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.sink import NETWORK_ERRORS, WORKING_REACTION, error_code, failure, neutralise_mentions
from core.errors import PlatformError


class SlackFinaliser:
    """Implements `core.ports.Finaliser` for one Slack app."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def post(self, target: dict[str, str], text: str) -> str:
        try:
            response = await self._client.chat_postMessage(
                channel=target["channel"], thread_ts=target.get("thread_ts") or None,
                markdown_text=neutralise_mentions(text),
            )
        except SlackApiError as exc:
            raise failure("chat.postMessage", exc) from exc
        except NETWORK_ERRORS as exc:
            raise PlatformError(f"chat.postMessage: {error_code(exc)}") from exc
        return str(response["ts"])

    async def edit(self, target: dict[str, str], ref: str, text: str) -> None:
        try:
            await self._client.chat_update(channel=target["channel"], ts=ref,
                                           markdown_text=neutralise_mentions(text))
        except SlackApiError as exc:
            raise failure("chat.update", exc) from exc
        except NETWORK_ERRORS as exc:
            raise PlatformError(f"chat.update: {error_code(exc)}") from exc

    async def done(self, target: dict[str, str]) -> None:
        if target.get("signal") != "reaction" or not target.get("source_ts"):
            return
        try:  # best effort: the owner may have cleared it already
            await self._client.reactions_remove(channel=target["channel"], timestamp=target["source_ts"],
                                                name=WORKING_REACTION)
        except (SlackApiError, *NETWORK_ERRORS):
            pass
