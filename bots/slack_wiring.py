"""Turns a `platform = "slack"` definition into a running Slack bot. (Being written.)"""

from __future__ import annotations

from aiohttp import web

from bots.definitions import BotDefinition
from bots.services import Services
from core.engine import ConversationEngine
from core.ports import BotRuntime


def build_slack_bot(
    definition: BotDefinition, engine: ConversationEngine, services: Services, web_app: web.Application
) -> BotRuntime:
    raise NotImplementedError(f"{definition.file}: the slack adapter is not available yet")
