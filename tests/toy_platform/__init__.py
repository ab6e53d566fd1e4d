"""A toy chat platform, built the way docs/architecture.md's "How to add a platform" says, but
kept under tests/ so that nothing under adapters/ or bots/ changes for it: the toy-platform test
registers it at run time instead of adding the registration line to `bots/registry.py`.

"Toy" messages arrive as `POST /toy/<bot>/messages` on the shared HTTP server (JSON `{"id", "user",
"text"}`); the answer's final texts come back in the response. A `[toy]` table has a `token`
(a credential) and an optional `greeting`; `TOY_API_URL` is its one setting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.engine import ConversationEngine
from core.errors import DefinitionError, Problems
from core.platform import CheckLine, PlatformSetting, PlatformSpec, ProbeContext, RuntimeContext, TableContext
from core.ports import BotRuntime, RenderLimits
from core.supervisor import ReplySupervisor
from core.types import Author, ConversationKey, IncomingMessage, ReplyInfo

PLATFORM = "toy"
TOY_FIELDS = frozenset({"token", "greeting"})
TOY_LIMITS = RenderLimits(max_chars=4000, split_chars=3900, min_edit_interval_s=0.0)
GOOD_TOKEN = "toy-good-token"  # the toy platform accepts this token and no other
API_URL_SETTING = "TOY_API_URL"
DEFAULT_API_URL = "https://toy.invalid/api"


@dataclass(frozen=True)
class ToyConfig:
    """One toy bot's `[toy]` table, validated."""

    token: str = field(repr=False)
    api_url: str = DEFAULT_API_URL
    greeting: str = "hello"


def toy_config(context: TableContext) -> ToyConfig:
    """Step 2: the table, checked; each mistake names `toy.<field>`."""
    problems = Problems()
    table: Mapping[str, Any] = context.table
    for key in sorted(set(table) - TOY_FIELDS):
        problems.add(DefinitionError(context.file, f"toy.{key}", f"unknown field; expected {sorted(TOY_FIELDS)}"))
    token = table.get("token")
    if not isinstance(token, str) or not token.strip():
        problems.add(DefinitionError(context.file, "toy.token", "expected the bot token (a string)"))
    greeting = table.get("greeting", "hello")
    if not isinstance(greeting, str):
        problems.add(DefinitionError(context.file, "toy.greeting", "expected a string"))
    problems.raise_if_any()
    assert isinstance(token, str)
    return ToyConfig(token=token.strip(), api_url=context.settings.get(API_URL_SETTING) or DEFAULT_API_URL,
                     greeting=str(greeting))


class ToySink:
    """A reply on the toy platform: messages kept in memory, shown when the reply is done."""

    def __init__(self) -> None:
        self.messages: dict[str, str] = {}

    @property
    def limits(self) -> RenderLimits:
        return TOY_LIMITS

    async def start(self) -> None:
        return None

    async def post(self, text: str) -> str:
        ref = str(len(self.messages))
        self.messages[ref] = text
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        self.messages[ref] = text

    async def finish(self) -> None:
        return None

    def footer(self, info: ReplyInfo) -> str | None:
        return None

    def journal_target(self) -> dict[str, str] | None:
        return None


class ToyBot:
    """Step 1: the runtime (`core.ports.BotRuntime`), its replies under a `ReplySupervisor`."""

    def __init__(self, engine: ConversationEngine, config: ToyConfig, *, shutdown_grace_s: float) -> None:
        self._engine = engine
        self.config = config
        self._grace_s = shutdown_grace_s
        self._replies = ReplySupervisor.for_bot(engine.profile, PLATFORM)
        self._ready = False
        self.started = asyncio.Event()

    @property
    def name(self) -> str:
        return self._engine.profile.name

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def path(self) -> str:
        return f"/toy/{self.name}/messages"

    async def start(self) -> None:
        self._ready = True
        self.started.set()

    async def stop(self) -> None:
        self._ready = False
        await self._replies.drain(finish_s=self._grace_s, total_s=self._grace_s)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        sink = ToySink()
        message = IncomingMessage(
            bot=self.name, platform=PLATFORM, conversation=ConversationKey(PLATFORM, "w", str(body["user"])),
            author=Author(str(body["user"]), str(body["user"])), text=str(body["text"]),
            event_id=str(body["id"]), received_at=0.0,
        )
        reply = self._replies.spawn(self._engine.handle(message, sink), name=f"toy-{body['id']}",
                                    conversation=str(message.conversation))
        outcome = await asyncio.shield(reply)
        return web.json_response({"status": outcome.status, "replies": list(sink.messages.values())})


def build_toy_bot(context: RuntimeContext, config: ToyConfig) -> BotRuntime:
    """Step 3: the runtime, its route on the shared server."""
    bot = ToyBot(context.engine, config, shutdown_grace_s=context.shutdown_grace_s)
    context.add_route("POST", bot.path, bot.handle)
    return bot


async def check_toy(config: ToyConfig, context: ProbeContext) -> list[CheckLine]:
    """Step 4: what `lunos-bots check` says about the token."""
    if config.token == GOOD_TOKEN:
        return [CheckLine(True, f"the toy platform at {config.api_url} accepted the token")]
    return [CheckLine(False, "token rejected by the toy platform; check [toy].token")]


TOY: PlatformSpec[ToyConfig] = PlatformSpec(
    name=PLATFORM,
    configure=toy_config,
    build=build_toy_bot,
    credential_fields=("token",),
    required_credentials=("token",),
    settings=(PlatformSetting(API_URL_SETTING, DEFAULT_API_URL),),
    probe=check_toy,
)
