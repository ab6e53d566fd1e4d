"""The Discord platform as the composition root sees it: `DISCORD`, its `PlatformSpec`.

Validates the `[discord]` table (each error names the file, the field and what was expected) into a
`DiscordConfig`, builds a `DiscordBot`, and points discord.py at DISCORD_API_URL /
DISCORD_GATEWAY_URL when they are not Discord's own (a fake server in tests, a proxy). Those two are
class attributes of discord.py, so they are process-wide: every Discord bot of the process talks to
the same Discord. `check` proves a token with `GET /users/@me`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import discord.gateway
import discord.http
import discord.utils
import discord.voice_client
import httpx
import structlog
import yarl

from adapters.discord.access import AccessPolicy
from adapters.discord.bot import DiscordBot
from adapters.discord.calls import add_discord_call_counter
from adapters.discord.config import (
    DISCORD_MIN_EDIT_INTERVAL_S,
    DISCORD_STOP_GRACE_S,
    DiscordConfig,
    FooterSettings,
)
from adapters.discord.translate import PLATFORM
from core.errors import DefinitionError, Problems
from core.message_index import MessageIndex
from core.platform import CheckLine, PlatformSetting, PlatformSpec, ProbeContext, RuntimeContext, TableContext
from core.ports import BotRuntime

log = structlog.get_logger(__name__)

DEFAULT_DISCORD_API_URL = "https://discord.com/api/v10"
DEFAULT_DISCORD_GATEWAY_URL = "wss://gateway.discord.gg/"
API_URL_SETTING = "DISCORD_API_URL"
GATEWAY_URL_SETTING = "DISCORD_GATEWAY_URL"

ID_LIST_FIELDS = (
    "guild_ids", "allowed_users", "denied_users", "allowed_roles", "denied_roles",
    "allowed_channels", "denied_channels", "respond_to_all", "channel_memory",
)
BOOL_FIELDS = {"allow_dms": True, "footer_model": False, "footer_fallback": True, "footer_trimmed": True}
DISCORD_FIELDS = frozenset({"token", "shard_count", "shard_ids", "edit_interval_s",
                            *ID_LIST_FIELDS, *BOOL_FIELDS})
MAX_SNOWFLAKE = 2**64 - 1  # Discord ids are unsigned 64-bit
MAX_EDIT_INTERVAL_S = 60.0  # slower than this is not streaming any more
MAX_SHARD_COUNT = 10_000  # far beyond any bot's needs; catches a typo like 1000000
DISCORD_PROBE_TIMEOUT_S = 10.0  # `check`: one GET /users/@me

# The bots never join voice channels, so discord.py's start-up warnings about the missing voice
# libraries (PyNaCl, davey) would only alarm a reader: they are switched off, process-wide.
discord.voice_client.VoiceClient.warn_nacl = False
discord.voice_client.VoiceClient.warn_dave = False


def _ids(file: str, table: Mapping[str, Any], key: str) -> tuple[int, ...]:
    raw = table.get(key, [])
    expected = "expected a list of Discord ids (numbers or strings of digits)"
    if not isinstance(raw, list):
        raise DefinitionError(file, f"discord.{key}", f"{expected}, got {type(raw).__name__}")
    ids: list[int] = []
    for i, item in enumerate(raw):
        text = item.strip() if isinstance(item, str) else item
        if isinstance(text, str) and text.isdigit():
            text = int(text)
        if isinstance(text, bool) or not isinstance(text, int) or not 0 < text <= MAX_SNOWFLAKE:
            raise DefinitionError(file, f"discord.{key}[{i}]", f"{expected}, got {item!r}")
        ids.append(text)
    return tuple(ids)


def _bool(file: str, table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise DefinitionError(file, f"discord.{key}", f"expected true or false, got {value!r}")
    return value


def _shards(file: str, table: Mapping[str, Any]) -> tuple[int | None, tuple[int, ...] | None]:
    count = table.get("shard_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or not 0 < count <= MAX_SHARD_COUNT):
        raise DefinitionError(file, "discord.shard_count",
                              f"expected a positive integer (at most {MAX_SHARD_COUNT}), got {count!r}")
    if "shard_ids" not in table:
        return count, None
    if count is None:
        raise DefinitionError(file, "discord.shard_ids",
                              "needs discord.shard_count (the total number of shards)")
    raw = table["shard_ids"]
    if not isinstance(raw, list) or not raw or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count for i in raw
    ):
        raise DefinitionError(file, "discord.shard_ids", "expected a non-empty list of shard numbers "
                              f"from 0 to {count - 1}, got {raw!r}")
    if len(set(raw)) != len(raw):
        raise DefinitionError(file, "discord.shard_ids", f"lists a shard twice: {raw!r}")
    return count, tuple(raw)


def _edit_interval(file: str, table: Mapping[str, Any]) -> float:
    value = table.get("edit_interval_s", DISCORD_MIN_EDIT_INTERVAL_S)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_EDIT_INTERVAL_S:
        raise DefinitionError(file, "discord.edit_interval_s",
                              "expected seconds between edits in a channel, above 0 and at most "
                              f"{MAX_EDIT_INTERVAL_S:g} (default {DISCORD_MIN_EDIT_INTERVAL_S}), "
                              f"got {value!r}")
    if value < DISCORD_MIN_EDIT_INTERVAL_S:
        log.warning("discord.fast_edits", file=file, edit_interval_s=value,
                    note="below ~5 edits per 5 s per channel, Discord answers 429 and edits slow down")
    return float(value)


def discord_config(context: TableContext) -> DiscordConfig:
    """The `[discord]` table as a `DiscordConfig`. Raises `DefinitionError` naming the field (an
    `InvalidDefinition` listing each when there are several mistakes)."""
    file, table = context.file, context.table
    problems = Problems()
    for key in sorted(set(table) - DISCORD_FIELDS):
        problems.add(DefinitionError(file, f"discord.{key}",
                                     f"unknown field; expected one of {sorted(DISCORD_FIELDS)}"))
    token = table.get("token")
    if not isinstance(token, str) or not token.strip():
        problems.add(DefinitionError(file, "discord.token", "expected the bot token (a non-empty string), "
                                     "e.g. token = \"${DISCORD_TOKEN}\""))
    no_ids: tuple[int, ...] = ()
    ids = {key: problems.attempt(lambda key=key: _ids(file, table, key), no_ids)  # type: ignore[misc]
           for key in ID_LIST_FIELDS}
    flags = {key: problems.attempt(lambda key=key, default=default: _bool(file, table, key, default),  # type: ignore[misc]
                                   default)
             for key, default in BOOL_FIELDS.items()}
    no_shards: tuple[int | None, tuple[int, ...] | None] = (None, None)
    shard_count, shard_ids = problems.attempt(lambda: _shards(file, table), no_shards)
    edit_interval_s = problems.attempt(lambda: _edit_interval(file, table), DISCORD_MIN_EDIT_INTERVAL_S)
    problems.raise_if_any()
    assert isinstance(token, str)  # for mypy: a bad one was recorded above
    return DiscordConfig(
        token=token.strip(),
        guild_ids=ids["guild_ids"],
        access=AccessPolicy(
            allowed_users=frozenset(ids["allowed_users"]), denied_users=frozenset(ids["denied_users"]),
            allowed_roles=frozenset(ids["allowed_roles"]), denied_roles=frozenset(ids["denied_roles"]),
            allowed_channels=frozenset(ids["allowed_channels"]),
            denied_channels=frozenset(ids["denied_channels"]), allow_dms=flags["allow_dms"],
        ),
        respond_to_all=frozenset(ids["respond_to_all"]),
        channel_memory=frozenset(ids["channel_memory"]),
        footer=FooterSettings(show_model=flags["footer_model"], show_fallback=flags["footer_fallback"],
                              show_trimmed=flags["footer_trimmed"]),
        shard_count=shard_count,
        shard_ids=shard_ids,
        edit_interval_s=edit_interval_s,
    )


def point_discord_py(api_url: str, gateway_url: str) -> None:
    """Aim discord.py's REST base and gateway at these URLs, touching nothing when they are Discord's
    own (so discord.py's defaults stay in charge). An `AutoShardedClient` given its `shard_count`, as
    ours always is, connects to the same `DEFAULT_GATEWAY`; resumes go to the `resume_gateway_url`
    the gateway itself announced."""
    if api_url.rstrip("/") != DEFAULT_DISCORD_API_URL.rstrip("/"):
        discord.http.Route.BASE = api_url.rstrip("/")
    if gateway_url != DEFAULT_DISCORD_GATEWAY_URL:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def discord_stop_grace_s(shutdown_grace_s: float) -> float:
    """Of SHUTDOWN_GRACE_S, how long replies in flight may finish on their own; the rest (15 s, or
    half of a shorter grace) goes to ending the cut-short ones with a final message."""
    return max(0.0, shutdown_grace_s - min(DISCORD_STOP_GRACE_S, shutdown_grace_s / 2))


def build_discord_bot(context: RuntimeContext, config: DiscordConfig) -> BotRuntime:
    """A `DiscordBot` for one definition; it needs no HTTP route (the gateway is an outgoing
    websocket). Its stop fits SHUTDOWN_GRACE_S; with `context.calls`, its REST calls are counted by
    route."""
    grace = context.shutdown_grace_s
    config = replace(config, stop_grace_s=discord_stop_grace_s(grace))
    point_discord_py(context.settings.get(API_URL_SETTING) or DEFAULT_DISCORD_API_URL,
                     context.settings.get(GATEWAY_URL_SETTING) or DEFAULT_DISCORD_GATEWAY_URL)
    index = MessageIndex(context.redis, context.keys, ttl_s=context.engine.profile.history.ttl_s,
                         circuit=context.circuit)
    bot = RestartableDiscordBot(context.engine, config, index=index, coordination=context.coordination,
                                stop_budget_s=grace)
    trace = bot.client.http.http_trace
    if context.calls is not None and trace is not None:
        add_discord_call_counter(trace, context.calls, context.bot)
    return bot


class RestartableDiscordBot(DiscordBot):
    """A `DiscordBot` the runner may start again after a failed start (Discord down at deploy time,
    a token fixed in the secret). A failed login closes discord.py's client, and a closed client
    never connects again until `clear()` re-opens it; its HTTP connector, closed with it, is
    dropped so the next login makes a new one (discord.py does when there is none)."""

    async def start(self) -> None:
        if self.client.is_closed():
            self.client.clear()
            http = self.client.http
            if http.connector is not discord.utils.MISSING and http.connector.closed:
                http.connector = discord.utils.MISSING
        await super().start()


async def probe_discord(api_url: str, token: str) -> str | None:
    """What `check` says about a Discord token, as `run` uses it: `GET /users/@me` (discord.py's
    login). None when Discord accepts it, else the problem in one phrase."""
    url = api_url.rstrip("/") + "/users/@me"
    try:
        async with httpx.AsyncClient(timeout=DISCORD_PROBE_TIMEOUT_S) as client:
            response = await client.get(url, headers={"Authorization": f"Bot {token}"})
    except httpx.HTTPError as exc:
        return f"Discord unreachable at {api_url} ({type(exc).__name__}); check DISCORD_API_URL"
    if response.status_code in (401, 403):
        return f"token rejected by GET /users/@me (HTTP {response.status_code}); check [discord].token"
    if response.status_code != 200:
        return f"GET /users/@me answered HTTP {response.status_code}"
    return None


async def check_discord(config: DiscordConfig, context: ProbeContext) -> list[CheckLine]:
    """`check`'s line for one Discord bot: whether Discord accepts its token."""
    api_url = context.settings.get(API_URL_SETTING) or DEFAULT_DISCORD_API_URL
    refused: str | None
    try:
        refused = await asyncio.wait_for(probe_discord(api_url, config.token), context.timeout_s)
    except TimeoutError:
        refused = f"Discord did not answer within {context.timeout_s:g} s; check {API_URL_SETTING}"
    return [CheckLine(refused is None, "Discord accepted the token (GET /users/@me)" if refused is None
                      else refused)]


DISCORD: PlatformSpec[DiscordConfig] = PlatformSpec(
    name=PLATFORM,
    configure=discord_config,
    build=build_discord_bot,
    credential_fields=("token",),
    required_credentials=("token",),
    settings=(PlatformSetting(API_URL_SETTING, DEFAULT_DISCORD_API_URL),
              PlatformSetting(GATEWAY_URL_SETTING, DEFAULT_DISCORD_GATEWAY_URL)),
    probe=check_discord,
)
