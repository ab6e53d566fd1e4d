"""`DiscordFinaliser`: the reply journal's way back to a Discord answer, from any process running
the bot (any shard: REST calls need no gateway session).

The journal records the answer's channel (`DiscordReplySink.journal_target`) and its message ids; a
sweeper that finds the answer's owner gone, or its final edit refused for longer than the turn could
wait, edits or posts through this. One call per method: the sweeper retries with backoff. The
client's `allowed_mentions` (nobody) applies here as everywhere.
"""

from __future__ import annotations

import aiohttp
import discord

from adapters.discord.sink import platform_error
from core.errors import PlatformError


class DiscordFinaliser:
    """Implements `core.ports.Finaliser` for one Discord bot."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client

    def _channel(self, target: dict[str, str]) -> discord.PartialMessageable:
        return self._client.get_partial_messageable(int(target["channel"]))

    async def post(self, target: dict[str, str], text: str) -> str:
        try:
            sent = await self._channel(target).send(text)
        except discord.HTTPException as exc:
            raise platform_error("post a message", exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PlatformError(f"could not reach Discord to post a message: {exc!r}") from exc
        return str(sent.id)

    async def edit(self, target: dict[str, str], ref: str, text: str) -> None:
        try:
            await self._channel(target).get_partial_message(int(ref)).edit(content=text)
        except discord.HTTPException as exc:
            raise platform_error("edit a message", exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PlatformError(f"could not reach Discord to edit a message: {exc!r}") from exc

    async def done(self, target: dict[str, str]) -> None:
        """Typing stops by itself on Discord: nothing to clear."""
