"""`guard_gateway_parsers`: a malformed gateway event is logged and dropped, not fatal.

discord.py 2.x parses each DISPATCH with `ConnectionState.parsers[EVENT](data)` inside
`DiscordWebSocket.received_message`, with nothing around the call: a payload missing a field it
reads (a MESSAGE_CREATE without `channel_id`, say) raises out of `Client.connect`, which only
reconnects on network errors, and the bot would stay disconnected for good. Wrapping each parser
keeps the connection and the bot up; the one bad event is skipped with a warning naming it.

This reaches into discord.py's `client._connection.parsers` (the dict the websocket reads its
parsers from, checked against discord.py 2.7); there is no public hook for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import discord
import structlog

log = structlog.get_logger(__name__)

Parser = Callable[[Any], None]


def _guarded(event: str, parse: Parser, context: Mapping[str, object]) -> Parser:
    def parse_or_drop(data: Any) -> None:
        try:
            parse(data)
        except Exception as exc:  # the gateway's entry point: one bad payload must not end the session
            fields = sorted(data) if isinstance(data, dict) else type(data).__name__
            log.warning("discord.malformed_event", **context, gateway_event=event,
                        error=f"{type(exc).__name__}: {exc}"[:200], fields=fields)

    return parse_or_drop


def guard_gateway_parsers(client: discord.Client, context: Mapping[str, object]) -> None:
    """Wrap every gateway event parser of `client` (once, before it connects)."""
    parsers: dict[str, Parser] | None = getattr(getattr(client, "_connection", None), "parsers", None)
    if not isinstance(parsers, dict):
        log.warning("discord.parsers_not_guarded", **context, note="discord.py internals changed")
        return
    for event, parse in list(parsers.items()):
        parsers[event] = _guarded(event, parse, context)
