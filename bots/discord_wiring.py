"""Turns a `platform = "discord"` definition into a running Discord bot. (Being written.)"""

from __future__ import annotations

from aiohttp import web

from bots.definitions import BotDefinition
from bots.services import Services
from core.engine import ConversationEngine
from core.ports import BotRuntime


def build_discord_bot(
    definition: BotDefinition, engine: ConversationEngine, services: Services, web_app: web.Application
) -> BotRuntime:
    raise NotImplementedError(f"{definition.file}: the discord adapter is not available yet")
