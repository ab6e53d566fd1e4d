"""A chat platform as the composition root sees it: one `PlatformSpec` per platform, kept in a
`PlatformRegistry`.

A spec says everything `bots/` needs to know about a platform, so `bots/` names none: the name of
its `[table]` in a bot definition, which fields of that table are credentials (an unset `${VAR}`
there means "this bot has no credentials", not an error), the environment settings it reads
(`SLACK_API_URL`…), how its table becomes a validated config, how a config and an engine become a
running `BotRuntime`, and how `lunos-bots check` proves its credentials. Each adapter package
defines its spec; `bots/registry.py` registers them, one line each. Relied on by the definition
loader, `Settings`, `check` and the runner.

This module must not know any platform.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis

from core.engine import ConversationEngine
from core.ports import BotRuntime, Coordination, PlatformCallObserver
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys

ConfigT = TypeVar("ConfigT")
# An HTTP route on the process's shared server: (method, path, handler). The handler takes and
# returns aiohttp's request and response (the server is aiohttp; core does not import it).
RouteAdder = Callable[[str, str, Callable[[Any], Awaitable[Any]]], object]


@dataclass(frozen=True)
class PlatformSetting:
    """One environment setting of a platform (e.g. `SLACK_API_URL`): its default when unset or
    empty, and how a value is normalised (e.g. a trailing slash added)."""

    name: str
    default: str
    normalise: Callable[[str], str] | None = None

    def read(self, env: Mapping[str, str]) -> str:
        value = env.get(self.name, "").strip() or self.default
        return self.normalise(value) if self.normalise is not None else value


@dataclass(frozen=True)
class TableContext:
    """What a platform's `configure` reads: its `[table]` of one bot definition (with `${VAR}`
    already expanded), the definition's file and bot name for error messages, and this process's
    values of the platform's settings."""

    file: str
    bot: str
    table: Mapping[str, Any]
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeContext:
    """What the composition root shares with a platform's `build`: the bot's engine and the
    process's stores, the one shutdown setting, the shared HTTP server and the metrics hook."""

    engine: ConversationEngine
    redis: Redis
    keys: RedisKeys
    circuit: RedisCircuit
    coordination: Coordination
    shutdown_grace_s: float  # SHUTDOWN_GRACE_S: the runtime's whole `stop` fits in it
    add_route: RouteAdder
    settings: Mapping[str, str] = field(default_factory=dict)
    calls: PlatformCallObserver | None = None  # counts the platform's API calls, when metrics are on

    @property
    def bot(self) -> str:
        return self.engine.profile.name


@dataclass(frozen=True)
class CheckLine:
    """One line of `lunos-bots check` about a bot's platform credentials."""

    ok: bool
    text: str


@dataclass(frozen=True)
class ProbeContext:
    """What a platform's `probe` gets: the bot's name, the platform's settings, and how long one
    call may take before the probe reports the platform as not answering."""

    bot: str
    settings: Mapping[str, str]
    timeout_s: float


@dataclass(frozen=True)
class PlatformSpec(Generic[ConfigT]):
    """Everything about one platform that the composition root needs.

    `configure` validates the platform's table into the adapter's config, raising
    `core.errors.DefinitionError` (or `InvalidDefinition`, for several mistakes) naming
    `<platform>.<field>`; `build` makes the runtime; `probe` calls the platform with the
    credentials as `run` would use them (None: nothing to prove). `terminal`: a local, one-user bot
    on this process's stdin (at most one runs, only with input, without HTTP or limits)."""

    name: str
    configure: Callable[[TableContext], ConfigT]
    build: Callable[[RuntimeContext, ConfigT], BotRuntime]
    credential_fields: tuple[str, ...] = ()  # an unset ${VAR} in these: the bot lacks credentials
    required_credentials: tuple[str, ...] = ()  # absent from the table: the bot lacks credentials
    settings: tuple[PlatformSetting, ...] = ()
    probe: Callable[[ConfigT, ProbeContext], Awaitable[list[CheckLine]]] | None = None
    terminal: bool = False


class PlatformRegistry:
    """The platforms this process knows, by name, in the order they were registered."""

    def __init__(self) -> None:
        self._specs: dict[str, PlatformSpec[Any]] = {}

    def register(self, spec: PlatformSpec[Any]) -> PlatformSpec[Any]:
        """Add `spec`; a second platform of the same name is a mistake."""
        if spec.name in self._specs:
            raise ValueError(f"platform {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Forget a platform (tests that register a toy one)."""
        self._specs.pop(name, None)

    def get(self, name: str) -> PlatformSpec[Any] | None:
        return self._specs.get(name)

    def __getitem__(self, name: str) -> PlatformSpec[Any]:
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[PlatformSpec[Any]]:
        return iter(list(self._specs.values()))

    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def read_settings(self, env: Mapping[str, str]) -> dict[str, str]:
        """Every registered platform's settings, read from `env` (defaults where unset)."""
        return {setting.name: setting.read(env) for spec in self for setting in spec.settings}
