"""Which adapter runs a bot of each platform, and how its definition becomes constructor arguments.

The only place that knows every adapter; adapters never import `bots`.
"""

from __future__ import annotations

from aiohttp import web

from adapters.console import ConsoleBot
from bots.definitions import BotDefinition
from bots.metrics import Metrics
from bots.services import Services
from bots.settings import Settings
from core.engine import ConversationEngine
from core.ports import BotRuntime


def validate_platform_table(definition: BotDefinition, services_settings: Settings) -> None:
    """Check a definition's [slack] / [discord] table as `run` would; raises `DefinitionError`."""
    if definition.platform == "slack":
        from bots.slack_wiring import slack_config

        slack_config(definition, services_settings.slack_api_url)
    elif definition.platform == "discord":
        from bots.discord_wiring import discord_config

        discord_config(definition)


def build_runtime(
    definition: BotDefinition, engine: ConversationEngine, services: Services, web_app: web.Application,
    metrics: Metrics | None = None,
) -> BotRuntime:
    """An adapter for `definition`, registered on the shared HTTP server where it needs routes, its
    platform calls counted in `metrics`, its shutdown within SHUTDOWN_GRACE_S."""
    if definition.platform == "console":
        return ConsoleBot(engine)
    if definition.platform == "slack":
        from bots.slack_wiring import build_slack_bot  # slack-bolt is imported only when needed

        return build_slack_bot(definition, engine, services, web_app, metrics)
    if definition.platform == "discord":
        from bots.discord_wiring import build_discord_bot  # likewise discord.py

        return build_discord_bot(definition, engine, services, web_app, metrics)
    raise NotImplementedError(f"{definition.file}: platform {definition.platform!r} has no adapter yet")
