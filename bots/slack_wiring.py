"""Turns a `platform = "slack"` definition into a running `SlackBot`: validates the `[slack]` table,
points every Slack client at `SLACK_API_URL`, shares the process's Redis budget, and registers the
HTTP-mode route on the shared server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from adapters.slack import EditPacing, SlackBot, SlackBotConfig
from adapters.slack.pacing import SLACK_TIER3_PER_MINUTE
from bots.definitions import BotDefinition
from bots.services import Services
from core.engine import ConversationEngine
from core.errors import DefinitionError
from core.ports import BotRuntime
from core.rate_budget import RateBudget

SLACK_FIELDS = frozenset({"bot_token", "signing_secret", "app_token", "require_mention", "streaming",
                          "edits_per_minute"})
STREAMING_MODES = ("edits", "native")


def slack_config(definition: BotDefinition, api_url: str) -> SlackBotConfig:
    """The `[slack]` table, checked. Raises `DefinitionError` naming the file and `slack.<field>`."""
    file = str(definition.file)
    table: Mapping[str, Any] = definition.platform_settings
    unknown = sorted(set(table) - SLACK_FIELDS)
    if unknown:
        raise DefinitionError(file, f"slack.{unknown[0]}",
                              f"unknown field; expected one of {sorted(SLACK_FIELDS)}")
    bot_token = _token(file, table, "bot_token", "xoxb-")
    if bot_token is None:
        raise DefinitionError(file, "slack.bot_token", "is required (a bot token starting xoxb-…)")
    app_token = _token(file, table, "app_token", "xapp-")
    signing_secret = _optional_str(file, table, "signing_secret")
    if not app_token and not signing_secret:
        raise DefinitionError(file, "slack.signing_secret",
                              "required in HTTP mode (set app_token instead for Socket Mode)")
    require_mention = table.get("require_mention", False)
    if not isinstance(require_mention, bool):
        raise DefinitionError(file, "slack.require_mention",
                              f"expected true or false, got {require_mention!r}")
    streaming = table.get("streaming", "edits")
    if streaming not in STREAMING_MODES:
        raise DefinitionError(file, "slack.streaming",
                              f"expected one of {STREAMING_MODES}, got {streaming!r}")
    per_minute = table.get("edits_per_minute", SLACK_TIER3_PER_MINUTE)
    if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 2:
        raise DefinitionError(file, "slack.edits_per_minute",
                              f"expected an integer of at least 2, got {per_minute!r}")
    return SlackBotConfig(
        bot_token=bot_token, signing_secret=signing_secret, app_token=app_token, api_url=api_url,
        require_mention=require_mention, streaming=streaming, pacing=EditPacing(per_window=per_minute),
    )


def build_slack_bot(
    definition: BotDefinition, engine: ConversationEngine, services: Services, web_app: web.Application
) -> BotRuntime:
    config = slack_config(definition, services.settings.slack_api_url)
    bot = SlackBot(engine, config, budget=RateBudget(services.redis, services.keys))
    if not config.socket_mode:
        bot.register_routes(web_app)
    return bot


def _optional_str(file: str, table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DefinitionError(file, f"slack.{key}", f"expected a string, got {type(value).__name__}")
    return value.strip() or None


def _token(file: str, table: Mapping[str, Any], key: str, prefix: str) -> str | None:
    value = _optional_str(file, table, key)
    if value is None:
        return None
    if not value.startswith(prefix):
        raise DefinitionError(file, f"slack.{key}", f"expected a token starting {prefix}…")
    return value
