"""A bot definition's platform, through the registry: its table validated, its runtime built, its
credentials proved. Names no platform: each one's `PlatformSpec` (`bots.registry`) knows how."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bots.definitions import BotDefinition
from bots.metrics import Metrics
from bots.registry import PLATFORMS
from bots.services import Services
from bots.settings import Settings
from core.engine import ConversationEngine
from core.errors import DefinitionError
from core.platform import CheckLine, PlatformSpec, ProbeContext, RuntimeContext, TableContext
from core.ports import BotRuntime


def platform_of(definition: BotDefinition) -> PlatformSpec[Any]:
    """The registered platform of `definition`; `DefinitionError` when none is (any more)."""
    spec = PLATFORMS.get(definition.platform)
    if spec is None:
        raise DefinitionError(str(definition.file), "platform", f"unknown platform "
                              f"{definition.platform!r}; expected one of {PLATFORMS.names()}")
    return spec


def validate_platform_table(definition: BotDefinition, settings: Settings) -> object:
    """A definition's platform table checked as `run` would, as the adapter's config; raises
    `DefinitionError` (an `InvalidDefinition` for several mistakes)."""
    context = TableContext(file=str(definition.file), bot=definition.name,
                           table=definition.platform_settings, settings=settings.platform_settings)
    return platform_of(definition).configure(context)


def build_runtime(
    definition: BotDefinition, engine: ConversationEngine, services: Services, web_app: web.Application,
    metrics: Metrics | None = None,
) -> BotRuntime:
    """An adapter for `definition`, registered on the shared HTTP server where it needs routes, its
    platform calls counted in `metrics`, its shutdown within SHUTDOWN_GRACE_S."""
    config = validate_platform_table(definition, services.settings)
    context = RuntimeContext(
        engine=engine, redis=services.redis, keys=services.keys, circuit=services.circuit,
        coordination=services.coordination, shutdown_grace_s=services.settings.shutdown_grace_s,
        add_route=web_app.router.add_route, settings=services.settings.platform_settings, calls=metrics,
    )
    return platform_of(definition).build(context, config)


async def prove_credentials(definition: BotDefinition, config: object, settings: Settings,
                            timeout_s: float) -> list[CheckLine]:
    """`check`'s lines about a bot's credentials, from its platform's probe (none for a platform
    with nothing to prove, such as the terminal)."""
    probe = platform_of(definition).probe
    if probe is None:
        return []
    return await probe(config, ProbeContext(bot=definition.name, settings=settings.platform_settings,
                                            timeout_s=timeout_s))


def is_terminal(definition: BotDefinition) -> bool:
    """A local bot on this process's stdin (at most one runs, only with input, needs no HTTP)."""
    spec = PLATFORMS.get(definition.platform)
    return spec is not None and spec.terminal
