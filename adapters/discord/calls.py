"""Counts discord.py's REST calls by route, for metrics, on its aiohttp trace.

discord.py retries its 429s quietly, so its HTTP session is the one place that sees every call.
What it counts goes to a `core.ports.PlatformCallObserver` (the runner's metrics).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import aiohttp

from adapters.discord.translate import PLATFORM
from core.ports import PlatformCallObserver

_DISCORD_ID = re.compile(r"/\d{5,}")
_DISCORD_API_PREFIX = re.compile(r"^/api(/v\d+)?")


def discord_route(method: str, path: str) -> str:
    """`PATCH /channels/{id}/messages/{id}`: a Discord REST route with its ids taken out."""
    return f"{method.upper()} " + _DISCORD_ID.sub("/{id}", _DISCORD_API_PREFIX.sub("", path))


def add_discord_call_counter(trace: aiohttp.TraceConfig, observer: PlatformCallObserver, bot: str) -> None:
    """Count discord.py's REST calls (and its 429s, which it retries quietly) on its aiohttp trace.
    Must run before the client's session is created (a trace is frozen with it)."""

    async def on_request_end(session: aiohttp.ClientSession, context: SimpleNamespace,
                             params: aiohttp.TraceRequestEndParams) -> None:
        route = discord_route(params.method, params.url.path)
        observer.platform_call(bot, PLATFORM, route, params.response.status)

    async def on_request_exception(session: aiohttp.ClientSession, context: SimpleNamespace,
                                   params: aiohttp.TraceRequestExceptionParams) -> None:
        observer.platform_call(bot, PLATFORM, discord_route(params.method, params.url.path), "network_error")

    trace.on_request_end.append(on_request_end)
    trace.on_request_exception.append(on_request_exception)
