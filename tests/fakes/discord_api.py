"""A fake Discord REST API (v10) and gateway for tests, good enough for an unmodified discord.py client.

:class:`FakeDiscord` is a real aiohttp server bound to 127.0.0.1 on a free port. It serves

* the REST routes a bot uses (``/users/@me``, ``/oauth2/applications/@me``, ``/gateway[/bot]``, channel
  messages: create / edit / delete / fetch / history, typing, reactions, threads, DM channel creation,
  application command bulk-overwrite, interaction callbacks and the interaction webhooks for
  follow-ups and ``@original`` edits), recording every call as a :class:`RecordedCall`;
* a websocket gateway at ``/gateway`` speaking JSON: HELLO → IDENTIFY → READY + one GUILD_CREATE per
  configured guild, HEARTBEAT → HEARTBEAT_ACK, RESUME → RESUMED, REQUEST_GUILD_MEMBERS →
  GUILD_MEMBERS_CHUNK. Frames honour the ``compress`` query parameter: ``zlib-stream`` (what discord.py
  2.7 asks for unless ``zstandard`` is importable) is answered with one zlib stream flushed with
  ``Z_SYNC_FLUSH`` per frame, anything else with plain text frames (discord.py parses text frames
  whatever it asked for).

Pointing discord.py at it (discord.py 2.7 — checked against the installed source)
--------------------------------------------------------------------------------------
Exactly two class attributes matter; :func:`point_discord_py_at` sets both and returns a restore function:

* ``discord.http.Route.BASE = fake.api_base`` (a ``str``, ``"http://127.0.0.1:PORT/api/v10"``). Every REST
  call, including the interaction callback / webhook routes used by ``interaction.response`` and
  ``interaction.followup``, is built from it.
* ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)`` (a ``yarl.URL``).
  ``discord.Client.connect()`` never asks ``GET /gateway``; it connects to ``DEFAULT_GATEWAY`` with
  ``?v=10&encoding=json&compress=zlib-stream`` and, after READY, resumes at ``resume_gateway_url``
  (which the fake sets to its own gateway URL). ``AutoShardedClient`` calls ``GET /gateway/bot`` first;
  that is served too.

Things to know about discord.py 2.7 when testing against this fake
------------------------------------------------------------------
* ``client.login(token)`` calls ``GET /users/@me`` then ``GET /oauth2/applications/@me`` (the application
  id comes from there, not from READY).
* ``on_ready`` fires only after no GUILD_CREATE arrived for ``guild_ready_timeout`` seconds (default 2.0).
  Pass ``discord.Client(..., guild_ready_timeout=0.1)`` to keep tests fast.
* With the privileged *members* intent on, discord.py chunks every guild at startup (gateway op 8); the
  fake answers with a GUILD_MEMBERS_CHUNK, so this works — without an answer on_ready would wait 5 s.
* The fake behaves like Discord about the *message content* intent: unless the identified client has
  ``Intents.message_content`` (bit 15), guild MESSAGE_CREATE/UPDATE events reach it with empty
  ``content``/``embeds``/``attachments``/``components`` unless the bot is in ``mentions`` or wrote the
  message (DMs are exempt). Events are also filtered by the GUILDS / GUILD_MESSAGES / DIRECT_MESSAGES /
  members / reactions / typing intents. Set ``enforce_intents=False`` to turn both off.
* A 429 is only treated as a rate limit by discord.py if the response carries a ``Via`` header and a body
  whose ``Content-Type`` is *exactly* ``application/json`` (otherwise it assumes a Cloudflare ban and
  raises). Both are done here. discord.py then sleeps ``retry_after`` (from the JSON body) and retries the
  same request in place, so a rate-limited ``message.edit()`` simply takes longer and lands.
* Attachment URLs point at the fake itself (``http://127.0.0.1:PORT/attachments/<channel>/<id>/<name>``,
  with the ``ex``/``is``/``hm`` query Discord's signed CDN URLs carry) and ``GET`` on them serves the bytes:
  files a test attaches with :meth:`FakeDiscord.attachment` and files the bot uploads. Unknown or unsigned
  URLs get 404, as an expired signed URL does on Discord's CDN. Downloads are recorded in
  ``attachment_downloads``; they are not REST calls (no ``Authorization`` header, not in ``calls``).
* Reactions: :meth:`FakeDiscord.send_reaction` dispatches MESSAGE_REACTION_ADD / MESSAGE_REACTION_REMOVE
  shaped like Discord's (``member`` and ``message_author_id`` on adds only), filtered by the reaction intents.
* Bot-authored messages are echoed back over the gateway (MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE)
  like Discord does, so ``on_message`` sees the bot's own replies (``echo_bot_messages=False`` to stop).
* Interactions must be answered within ``interaction_deadline`` seconds (default 3.0, like Discord) or the
  callback gets 404 ``Unknown interaction`` (10062); a second callback gets 400 (40060). discord.py 2.7
  posts callbacks with ``?with_response=1`` and parses ``{"interaction": {...}, "resource": {...}}``.
* Validation like Discord's: content over 2000 characters → 400/50035, an empty message → 400/50006,
  replying to an unknown message → 400/50035, editing someone else's message → 403/50005.
* Normal responses carry constant ``X-RateLimit-*`` headers that never make discord.py wait. With
  ``bucket_limit=N`` each route+major-parameter bucket allows N requests per ``bucket_window`` seconds
  and the headers are truthful, so discord.py waits ahead of time (and any excess gets a real 429).
* An exception inside the fake is answered with 400 (a 500 would make discord.py retry for ~25 s) and
  stored in ``internal_errors``.
* ``import discord`` triggers a DeprecationWarning (stdlib ``audioop``) that ``-W error`` turns into an
  ImportError; this module imports discord.py with that one warning suppressed, so import it first (or
  suppress it the same way).

The injection API (:meth:`FakeDiscord.dispatch`, :meth:`~FakeDiscord.send_message_create`,
:meth:`~FakeDiscord.send_interaction`) only sends to gateway connections that have identified (or
resumed); it raises ``RuntimeError`` if there is none, so wait for ``on_ready`` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import math
import re
import secrets
import time
import warnings
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import yarl
from aiohttp import BodyPartReader, WSMsgType, web

with warnings.catch_warnings():
    # discord.py imports the stdlib ``audioop`` (deprecated since 3.11): harmless, but fatal under -W error
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord.gateway
    import discord.http

__all__ = [
    "ChannelSpec",
    "FakeDiscord",
    "GuildSpec",
    "RecordedCall",
    "RoleSpec",
    "default_guild",
    "discord_py_pointed_at",
    "point_discord_py_at",
]

API_VERSION = 10
DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_CONTENT_LENGTH = 2000

# Gateway intents (bit values, as in discord.Intents)
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_GUILD_MESSAGE_TYPING = 1 << 11
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_DIRECT_MESSAGE_REACTIONS = 1 << 13
INTENT_DIRECT_MESSAGE_TYPING = 1 << 14
INTENT_MESSAGE_CONTENT = 1 << 15

# Permission bits used for the defaults
_P = {
    "create_instant_invite": 1 << 0,
    "kick_members": 1 << 1,
    "add_reactions": 1 << 6,
    "view_channel": 1 << 10,
    "send_messages": 1 << 11,
    "manage_messages": 1 << 13,
    "embed_links": 1 << 14,
    "attach_files": 1 << 15,
    "read_message_history": 1 << 16,
    "use_external_emojis": 1 << 18,
    "connect": 1 << 20,
    "speak": 1 << 21,
    "change_nickname": 1 << 26,
    "use_application_commands": 1 << 31,
    "create_public_threads": 1 << 35,
    "create_private_threads": 1 << 36,
    "send_messages_in_threads": 1 << 38,
}
EVERYONE_PERMISSIONS = sum(
    _P[name]
    for name in (
        "create_instant_invite",
        "add_reactions",
        "view_channel",
        "send_messages",
        "embed_links",
        "attach_files",
        "read_message_history",
        "use_external_emojis",
        "connect",
        "speak",
        "change_nickname",
        "use_application_commands",
        "create_public_threads",
        "create_private_threads",
        "send_messages_in_threads",
    )
)
MODERATOR_PERMISSIONS = _P["manage_messages"] | _P["kick_members"]
ALL_PERMISSIONS = (1 << 51) - 1

THREAD_TYPES = frozenset({10, 11, 12})
TEXTLIKE_TYPES = frozenset({0, 1, 2, 3, 5, 10, 11, 12, 13})  # channel types a message can be sent in

MESSAGE_FLAG_EPHEMERAL = 1 << 6
MESSAGE_FLAG_LOADING = 1 << 7

_ERROR_MESSAGES = {
    0: "General error",
    10003: "Unknown Channel",
    10004: "Unknown Guild",
    10008: "Unknown Message",
    10013: "Unknown User",
    10015: "Unknown Webhook",
    10062: "Unknown interaction",
    30046: "Maximum number of edits to messages older than 1 hour reached. Try again later.",
    40060: "Interaction has already been acknowledged.",
    50001: "Missing Access",
    50005: "Cannot edit a message authored by another user",
    50006: "Cannot send an empty message",
    50008: "Cannot send messages in a non-text channel",
    50013: "Missing Permissions",
    50035: "Invalid Form Body",
    50083: "Operation cannot be performed on an archived thread",
    160002: "Cannot reply without permission to read message history",
    160005: "Thread is locked",
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------------------------------
# Configuration and records
# --------------------------------------------------------------------------------------------------


@dataclass
class ChannelSpec:
    """A guild channel (type 0 text, 2 voice, 4 category, 5 news) or thread (10/11/12, needs parent_id)."""

    id: str
    name: str
    type: int = 0
    parent_id: str | None = None
    topic: str | None = None


@dataclass
class RoleSpec:
    """A guild role. ``permissions=None`` means the fake's default for @everyone (id == guild id) or 0.

    ``bot_id`` makes it that bot's managed role (``tags.bot_id``, what discord.py's ``Guild.self_role``
    looks for); the bot holds it, like the role Discord creates when a bot is invited with permissions.
    """

    id: str
    name: str
    permissions: int | None = None
    position: int = 0
    bot_id: str | None = None


@dataclass
class GuildSpec:
    """A guild the bot is in.

    ``members`` are the other members: user payloads or member payloads (``{"user": ..., "roles": [...]}``).
    The bot is always a member. GUILD_CREATE carries only the bot's member object (plus ``member_count``
    for everyone), like Discord for non-small guilds; the rest come through member chunking (op 8).
    """

    id: str
    name: str
    channels: list[ChannelSpec] = field(default_factory=list)
    roles: list[RoleSpec] = field(default_factory=list)
    owner_id: str = "6000"
    members: list[dict[str, Any]] = field(default_factory=list)


def default_guild() -> GuildSpec:
    """Guild "2000": text "3000" (#general), category "2999" holding text "3001", thread "3100" in "3000".

    Roles: "2000" (@everyone), "4000" (moderator) and "4100" (the bot's managed role, which grants
    nothing). Members: the bot, alice "5000", owner "6000".
    """
    return GuildSpec(
        id="2000",
        name="Test Guild",
        channels=[
            ChannelSpec(id="3000", name="general", type=0),
            ChannelSpec(id="2999", name="Bots", type=4),
            ChannelSpec(id="3001", name="bot-chat", type=0, parent_id="2999"),
            ChannelSpec(id="3100", name="a thread", type=11, parent_id="3000"),
        ],
        roles=[
            RoleSpec(id="2000", name="@everyone"),
            RoleSpec(id="4000", name="moderator", permissions=MODERATOR_PERMISSIONS, position=1),
            RoleSpec(id="4100", name="FakeBot", position=2, bot_id="1000"),
        ],
        owner_id="6000",
        members=[
            {"id": "5000", "username": "alice", "discriminator": "0", "global_name": "Alice", "avatar": None},
            {"id": "6000", "username": "owner", "discriminator": "0", "global_name": "Owner", "avatar": None},
        ],
    )


@dataclass
class RecordedCall:
    """One REST request the fake answered. ``path`` is relative to ``api_base`` (e.g. ``/users/@me``)."""

    method: str
    path: str
    json: Any  # parsed JSON body (for multipart: the payload_json part), None if there was none
    at: float  # time.monotonic() when the request arrived
    status: int  # HTTP status the fake answered
    query: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # uploaded file names (multipart requests)
    authorization: str | None = None  # the Authorization header, if any
    response: Any = None  # the JSON body the fake answered (None for 204)
    done_at: float = 0.0  # time.monotonic() when the answer was ready (after any ``delay_next``)


@dataclass
class _Failure:
    method: str
    path_contains: str
    remaining: int
    status: int
    retry_after: float
    global_: bool
    code: int | None
    message: str | None


@dataclass
class _Delay:
    method: str
    path_contains: str
    remaining: int
    seconds: float


@dataclass(eq=False)
class _Session:
    session_id: str
    intents: int
    identify: dict[str, Any]
    shard: list[int] | None
    seq: int = 0


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    query: dict[str, str]
    compressor: Any | None  # zlib compress object for zlib-stream, else None (text frames)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: _Session | None = None


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    query: dict[str, str]
    files: list[dict[str, Any]]


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str | None = None, errors: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message or _ERROR_MESSAGES.get(code, f"Error {code}")
        self.errors = errors

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def _form_error(field_name: str, code: str, message: str) -> _ApiError:
    return _ApiError(400, 50035, errors={field_name: {"_errors": [{"code": code, "message": message}]}})


_Reply = tuple[int, Any]  # (status, JSON payload or None for an empty body)
_Handler = Callable[[_Request], Awaitable[_Reply]]


# --------------------------------------------------------------------------------------------------
# discord.py wiring
# --------------------------------------------------------------------------------------------------


def point_discord_py_at(fake: FakeDiscord) -> Callable[[], None]:
    """Point discord.py (process-wide) at ``fake``; returns a function restoring the original values."""
    route_cls = discord.http.Route
    ws_cls = discord.gateway.DiscordWebSocket
    old_base = route_cls.BASE
    old_gateway = ws_cls.DEFAULT_GATEWAY
    route_cls.BASE = fake.api_base
    ws_cls.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)

    def restore() -> None:
        route_cls.BASE = old_base
        ws_cls.DEFAULT_GATEWAY = old_gateway

    return restore


@contextlib.contextmanager
def discord_py_pointed_at(fake: FakeDiscord) -> Iterator[FakeDiscord]:
    """Context-manager form of :func:`point_discord_py_at`."""
    restore = point_discord_py_at(fake)
    try:
        yield fake
    finally:
        restore()


# --------------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------------


class FakeDiscord:
    """In-memory Discord: REST API v10 + JSON gateway on 127.0.0.1; use ``async with FakeDiscord() as fake``.

    Only one test at a time should point discord.py at an instance (the knobs are class attributes).
    """

    def __init__(
        self,
        *,
        bot_user_id: str = "1000",
        application_id: str = "1000",
        guilds: list[GuildSpec] | None = None,
        bot_name: str = "FakeBot",
        heartbeat_interval_ms: int = 45_000,
        expected_token: str | None = None,
        enforce_intents: bool = True,
        echo_bot_messages: bool = True,
        interaction_deadline: float | None = 3.0,
        bucket_limit: int | None = None,
        bucket_window: float = 5.0,
    ) -> None:
        self.bot_user_id = bot_user_id
        self.application_id = application_id
        self.guilds: list[GuildSpec] = guilds if guilds is not None else [default_guild()]
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.expected_token = expected_token  # if set, other tokens get 401 / gateway close 4004
        self.enforce_intents = enforce_intents
        self.echo_bot_messages = echo_bot_messages
        self.interaction_deadline = interaction_deadline
        self.bucket_limit = bucket_limit  # if set: each bucket allows this many requests per bucket_window
        self.bucket_window = bucket_window

        self.bot_user: dict[str, Any] = {
            "id": bot_user_id,
            "username": bot_name,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "public_flags": 0,
            "flags": 0,
            "verified": True,
            "mfa_enabled": False,
            "locale": "en-US",
            "email": None,
        }
        self.owner_user: dict[str, Any] = self.human("6000", "owner")

        # REST bookkeeping
        self.calls: list[RecordedCall] = []
        self.rate_limited_count = 0
        self.internal_errors: list[BaseException] = []  # bugs in the fake itself (answered 400)
        self._failures: list[_Failure] = []
        self._delays: list[_Delay] = []
        self._buckets: dict[str, tuple[float, int]] = {}  # bucket key -> (window reset monotonic, count)

        # message state
        self.messages: dict[str, dict[str, Any]] = {}
        self.edit_counts: dict[str, int] = {}
        self.content_history: dict[str, list[str]] = {}  # message id -> every content, oldest first
        self.deleted_message_ids: list[str] = []
        self.reactions: dict[str, list[str]] = {}  # message id -> emojis the bot added (in order)
        self.files: dict[str, tuple[bytes, str | None]] = {}  # attachment URL path -> (bytes, content type)
        self.attachment_downloads: list[str] = []  # URL paths of every attachment GET, in order
        self.typing_channels: list[str] = []  # channel ids of POST /channels/{id}/typing, in order

        # channels / users
        self.users: dict[str, dict[str, Any]] = {bot_user_id: self.bot_user}
        self.dm_channels: dict[str, dict[str, Any]] = {}
        self._dm_by_user: dict[str, str] = {}
        self._channels: dict[str, dict[str, Any]] = {}  # guild channel / thread id -> channel payload
        self._channel_guild: dict[str, str] = {}
        self._guild_members: dict[str, dict[str, dict[str, Any]]] = {}
        self._joined_at = _now_iso()
        for g in self.guilds:
            self._index_guild(g)

        # application commands / interactions
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[str, list[dict[str, Any]]] = {}
        self.interactions: dict[str, dict[str, Any]] = {}  # interaction id -> payload sent
        self.interaction_callbacks: dict[str, dict[str, Any]] = {}  # interaction id -> callback body
        self._interaction_meta: dict[str, dict[str, Any]] = {}  # interaction id -> bookkeeping
        self._token_to_interaction: dict[str, str] = {}

        # gateway bookkeeping
        self.identifies: list[dict[str, Any]] = []
        self.gateway_connections: list[dict[str, str]] = []  # query params of every ws connection
        self.gateway_received: list[dict[str, Any]] = []  # every payload received from clients
        self.heartbeats_received = 0
        self.resumes: list[dict[str, Any]] = []
        self._sessions: dict[str, _Session] = {}
        self._connections: list[_Connection] = []

        self._snowflake_last = 0
        self._file_secret = secrets.token_hex(16)
        self._cond = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._routes: list[tuple[str, re.Pattern[str], str, _Handler]] = []
        self._register_routes()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake shutting down")
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started")
        return self._port

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------------ assertions helpers

    def calls_matching(self, method: str, path_contains: str) -> list[RecordedCall]:
        """Recorded calls with this HTTP method ("*" for any) whose API-relative path contains the text."""
        m = method.upper()
        return [c for c in self.calls if (m == "*" or c.method == m) and path_contains in c.path]

    def bot_messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Live (not deleted) messages the bot authored in the channel, in creation order, current content.

        Includes interaction responses and follow-ups (their ``flags`` tell ephemeral ones apart).
        """
        return [
            m
            for m in self.messages.values()
            if m["channel_id"] == str(channel_id) and m["author"]["id"] == self.bot_user_id
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true; re-checked after every recorded call / state change."""
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(predicate), timeout)
            except TimeoutError:
                last = [(c.method, c.path, c.status) for c in self.calls[-5:]]
                raise TimeoutError(f"condition not met within {timeout}s (last calls: {last})") from None

    async def wait_for_identify(self, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Wait for a gateway IDENTIFY and return the latest IDENTIFY ``d`` payload."""
        await self.wait_for(lambda: bool(self.identifies), timeout)
        return self.identifies[-1]

    def human(self, user_id: str = "5000", name: str = "alice", *, bot: bool = False) -> dict[str, Any]:
        """A user payload (plain builder; users seen in injected events are remembered by the fake)."""
        user: dict[str, Any] = {
            "id": str(user_id),
            "username": name,
            "discriminator": "0",
            "global_name": name.capitalize(),
            "avatar": None,
            "public_flags": 0,
        }
        if bot:
            user["bot"] = True
        return user

    def dm_channel_id(self, user_id: str) -> str:
        """The stable DM channel id between the bot and ``user_id`` (created on first use)."""
        return str(self._ensure_dm_channel(str(user_id))["id"])

    def channel(self, channel_id: str) -> dict[str, Any] | None:
        """The current payload of a guild channel, thread or DM channel."""
        cid = str(channel_id)
        return self._channels.get(cid) or self.dm_channels.get(cid)

    def interaction_original(self, interaction_id: str) -> dict[str, Any] | None:
        """The current original-response message of an interaction, if one was created."""
        meta = self._interaction_meta.get(str(interaction_id))
        if meta is None or meta["original_message_id"] is None:
            return None
        return self.messages.get(meta["original_message_id"])

    def fail_next(
        self,
        method: str,
        path_contains: str,
        *,
        times: int = 1,
        retry_after: float = 0.05,
        global_: bool = False,
        status: int = 429,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with an error instead of handling them.

        ``status=429`` (default) gives a Discord rate limit (JSON ``retry_after``/``global`` + headers);
        any other status gives ``{"code": code, "message": ...}``. ``method`` may be "*" for any method;
        ``path_contains`` is matched against the API-relative path (e.g. ``/channels/3000/messages``).
        """
        self._failures.append(
            _Failure(method.upper(), path_contains, times, status, retry_after, global_, code, message)
        )

    def delay_next(self, method: str, path_contains: str, seconds: float, *, times: int = 1) -> None:
        """Answer the next ``times`` matching requests ``seconds`` late (a slow Discord): the request
        is recorded as arriving on time and handled, and answered, after the delay."""
        self._delays.append(_Delay(method.upper(), path_contains, times, seconds))

    async def delete_message(self, message_id: str) -> None:
        """Delete a message as a moderator would (any author), telling the gateway like Discord."""
        msg = self.messages.get(str(message_id))
        if msg is None:
            raise KeyError(f"no live message {message_id}")
        await self._delete(msg)
        await self.notify()

    async def notify(self) -> None:
        """Wake :meth:`wait_for` waiters (for predicates over state the fake does not know changed)."""
        async with self._cond:
            self._cond.notify_all()

    def attachment(
        self,
        filename: str,
        data: bytes,
        *,
        content_type: str | None = None,
        channel_id: str = "0",
        size: int | None = None,
    ) -> dict[str, Any]:
        """An attachment object for a message a test sends (``send_message_create(attachments=[...])``),
        its bytes served by the fake at the signed ``url`` (and ``proxy_url``). ``size`` overrides the
        reported size (Discord reports the real one; a test may want a file that claims otherwise)."""
        aid = self._snowflake()
        return self._store_file(channel_id, aid, filename, data, content_type, size=size)

    def _store_file(
        self, channel_id: str, aid: str, filename: str, data: bytes, content_type: str | None,
        *, size: int | None = None,
    ) -> dict[str, Any]:
        # The shape of https://discord.com/developers/docs/resources/message#attachment-object; the URL
        # is signed like https://discord.com/developers/docs/reference#signed-attachment-cdn-urls.
        path = f"/attachments/{channel_id}/{aid}/{filename}"
        self.files[path] = (data, content_type)
        url = f"http://127.0.0.1:{self.port}{path}?{self._signature(path)}"
        payload: dict[str, Any] = {
            "id": aid,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
            "flags": 0,
        }
        if content_type is not None:
            payload["content_type"] = content_type
        return payload

    def _signature(self, path: str) -> str:
        issued = int(time.time())
        expires = issued + 24 * 3600
        mac = hashlib.sha256(f"{self._file_secret}|{path}|{expires:x}".encode()).hexdigest()
        return f"ex={expires:x}&is={issued:x}&hm={mac}&"

    def _serve_file(self, request: web.Request) -> web.Response:
        """``GET`` on an attachment URL: the bytes, if the path is known and the signature valid."""
        path = request.path
        self.attachment_downloads.append(path)
        stored = self.files.get(path)
        expires = request.query.get("ex", "")
        expected = hashlib.sha256(f"{self._file_secret}|{path}|{expires}".encode()).hexdigest()
        valid = bool(expires) and request.query.get("hm") == expected and int(expires, 16) >= time.time()
        if request.method not in ("GET", "HEAD") or stored is None or not valid:
            return web.Response(status=404, text="This content is no longer available.")
        data, content_type = stored
        return web.Response(body=data, content_type=(content_type or "application/octet-stream").split(";")[0])

    async def send_reaction(
        self,
        *,
        channel_id: str,
        message_id: str,
        emoji: str,
        user: dict[str, Any] | None = None,
        added: bool = True,
        emoji_id: str | None = None,
    ) -> dict[str, Any]:
        """Dispatch MESSAGE_REACTION_ADD (``added``) or MESSAGE_REACTION_REMOVE for ``user`` (default
        alice) reacting with ``emoji`` (a unicode emoji, or a custom emoji's name with ``emoji_id``) on
        a stored message; returns the payload. Like Discord
        (https://discord.com/developers/docs/events/gateway-events#message-reaction-add): ``member``
        (in a guild) and ``message_author_id`` only on adds. Replaying the same add is allowed (a
        resumed gateway can redeliver it); the fake does not track who reacted."""
        msg = self.messages.get(str(message_id))
        if msg is None or msg["channel_id"] != str(channel_id):
            raise KeyError(f"no live message {message_id} in channel {channel_id}")
        user = user or self.human()
        self._remember_user(user)
        gid = self._channel_guild.get(str(channel_id))
        data: dict[str, Any] = {
            "user_id": str(user["id"]),
            "channel_id": str(channel_id),
            "message_id": str(message_id),
            "emoji": {"id": emoji_id, "name": emoji, **({"animated": False} if emoji_id else {})},
            "burst": False,
            "type": 0,
        }
        if gid is not None:
            data["guild_id"] = gid
        if added:
            data["burst_colors"] = []
            data["message_author_id"] = msg["author"]["id"]
            if gid is not None:
                data["member"] = self._member_payload(gid, user)
        await self.dispatch("MESSAGE_REACTION_ADD" if added else "MESSAGE_REACTION_REMOVE", data)
        await self.notify()
        return data

    # ------------------------------------------------------------------ injection (gateway)

    async def dispatch(self, event: str, data: dict[str, Any], *, respect_intents: bool = True) -> None:
        """Send a DISPATCH (op 0) ``event`` to every identified gateway client (intents permitting)."""
        targets = [c for c in self._connections if c.session is not None and not c.ws.closed]
        if not targets:
            raise RuntimeError(f"no identified gateway connection to dispatch {event} to")
        await self._broadcast(event, data, respect_intents=respect_intents)

    async def dispatch_raw(self, event: str, data: Any) -> None:
        """Send a DISPATCH (op 0) exactly as given to every identified gateway client: no intent
        filtering, no content shaping, no validation. For malformed payloads in robustness tests."""
        targets = [c for c in self._connections if c.session is not None and not c.ws.closed]
        if not targets:
            raise RuntimeError(f"no identified gateway connection to dispatch {event} to")
        for conn in targets:
            await self._send_dispatch(conn, event, data)

    async def send_message_create(
        self,
        *,
        channel_id: str,
        content: str,
        author: dict[str, Any] | None = None,
        guild_id: str | None = None,
        mentions: list[dict[str, Any]] | None = None,
        message_reference: dict[str, Any] | None = None,
        referenced_message: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        embeds: list[dict[str, Any]] | None = None,
        mention_roles: list[str] | None = None,
        webhook_id: str | None = None,
    ) -> dict[str, Any]:
        """Build, store and dispatch a MESSAGE_CREATE from a (default human) user; returns the payload.

        ``guild_id`` defaults to the guild owning ``channel_id``; a channel id no guild owns is a DM
        channel with the author (use :meth:`dm_channel_id` to get the usual one). For a reply pass
        ``message_reference={"message_id": ...}``; ``referenced_message`` defaults to the stored message.
        ``mention_roles`` lists the ids of mentioned roles. ``webhook_id`` makes it a webhook's message:
        ``author`` is then the webhook's identity and there is no ``member``, as on Discord.
        """
        cid = str(channel_id)
        author = author or self.human()
        self._remember_user(author)
        gid = str(guild_id) if guild_id is not None else self._channel_guild.get(cid)
        if gid is None and cid not in self.dm_channels:
            self._ensure_dm_channel(author["id"], channel_id=cid)
        msg = self._build_message(
            channel_id=cid,
            guild_id=gid,
            author=author,
            content=content,
            mentions=mentions,
            attachments=attachments,
            embeds=embeds,
        )
        msg["mention_roles"] = [str(r) for r in mention_roles or []]
        if webhook_id is not None:
            msg["webhook_id"] = str(webhook_id)
            msg.pop("member", None)
        if message_reference is not None:
            ref: dict[str, Any] = {"type": 0, "channel_id": cid, **message_reference}
            for key in ("message_id", "channel_id", "guild_id"):
                if ref.get(key) is not None:
                    ref[key] = str(ref[key])
            if gid is not None:
                ref.setdefault("guild_id", gid)
            msg["type"] = 19
            msg["message_reference"] = ref
            if referenced_message is None:
                referenced_message = self._referenced_copy(ref.get("message_id"))
            msg["referenced_message"] = referenced_message
        self._store_message(msg)
        await self.dispatch("MESSAGE_CREATE", msg)
        await self.notify()
        return msg

    async def send_interaction(
        self,
        *,
        name: str,
        channel_id: str,
        user: dict[str, Any] | None = None,
        guild_id: str | None = None,
        options: list[Any] | None = None,
        resolved: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Dispatch an INTERACTION_CREATE for slash command ``name`` (type 2 / data type 1); returns it.

        ``guild_id`` defaults to the guild owning ``channel_id`` (otherwise a bot-DM interaction).
        ``data.id`` / ``data.guild_id`` follow what was registered through the commands routes: a guild
        command gets ``data.guild_id``; an unregistered command in a guild also gets it (discord.py's
        tree falls back to global commands). ``member.permissions`` are the member's guild-wide
        permissions (the fake has no channel overwrites). A command's ``default_member_permissions``
        is not applied: server admins can override it per command (Server Settings → Integrations),
        so a bot must check the permissions itself, and tests send what they like.
        """
        cid = str(channel_id)
        user = user or self.human()
        self._remember_user(user)
        gid = str(guild_id) if guild_id is not None else self._channel_guild.get(cid)
        iid = self._snowflake()
        token = f"fake-interaction-token-{iid}-{secrets.token_hex(8)}"

        registered = None
        registered_in_guild = False
        if gid is not None:
            registered = next((c for c in self.guild_commands.get(gid, []) if c["name"] == name), None)
            registered_in_guild = registered is not None
        if registered is None:
            registered = next((c for c in self.global_commands if c["name"] == name), None)
        data: dict[str, Any] = {
            "id": registered["id"] if registered else self._snowflake(),
            "name": name,
            "type": 1,
            "options": list(options or []),
        }
        if gid is not None and (registered_in_guild or registered is None):
            data["guild_id"] = gid
        if resolved is not None:
            data["resolved"] = resolved

        payload: dict[str, Any] = {
            "id": iid,
            "application_id": self.application_id,
            "type": 2,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": cid,
            "locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if gid is not None:
            channel = copy.deepcopy(self._channels.get(cid, {"id": cid, "type": 0}))
            member = self._member_payload(gid, user)
            member["permissions"] = str(self._member_permissions(gid, user["id"]))
            channel["permissions"] = member["permissions"]
            payload.update(
                guild_id=gid,
                guild={"id": gid, "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member,
                channel=channel,
                app_permissions=str(self._member_permissions(gid, self.bot_user_id)),
                authorizing_integration_owners={"0": gid},
                context=0,
            )
        else:
            dm = self.dm_channels.get(cid) or self._ensure_dm_channel(user["id"], channel_id=cid)
            payload.update(
                user=user,
                channel=copy.deepcopy(dm),
                app_permissions=str(EVERYONE_PERMISSIONS),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        self.interactions[iid] = payload
        self._interaction_meta[iid] = {
            "token": token,
            "created": time.monotonic(),
            "acknowledged": False,
            "original_message_id": None,
            "user": user,
            "channel_id": cid,
            "guild_id": gid,
            "name": name,
        }
        self._token_to_interaction[token] = iid
        await self.dispatch("INTERACTION_CREATE", payload)
        await self.notify()
        return payload

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT to every connection (discord.py reconnects and RESUMEs)."""
        for conn in list(self._connections):
            await self._send(conn, {"op": 7, "d": None})

    async def disconnect_clients(self, code: int = 4000) -> None:
        """Close every gateway connection with ``code`` (4000 → discord.py reconnects and RESUMEs)."""
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=code, message=b"closed by fake")

    # ------------------------------------------------------------------ internal: state

    def _snowflake(self) -> str:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = max((ms << 22) | (1 << 17), self._snowflake_last + 1)
        self._snowflake_last = value
        return str(value)

    def _remember_user(self, user: dict[str, Any]) -> None:
        self.users.setdefault(str(user["id"]), copy.deepcopy(user))

    def _index_guild(self, g: GuildSpec) -> None:
        if not any(r.id == g.id for r in g.roles):
            g.roles.insert(0, RoleSpec(id=g.id, name="@everyone"))
        members: dict[str, dict[str, Any]] = {}
        managed = [r.id for r in g.roles if r.bot_id == self.bot_user_id]
        for entry in [{"user": self.bot_user, "roles": managed}, *g.members]:
            user = entry["user"] if "user" in entry else entry
            self._remember_user(user)
            members[str(user["id"])] = self._full_member(user, entry.get("roles"))
        self._guild_members[g.id] = members
        position = 0
        for c in g.channels:
            payload = self._channel_payload(g.id, c, position)
            if c.type not in THREAD_TYPES:
                position += 1
            self._channels[c.id] = payload
            self._channel_guild[c.id] = g.id

    def _channel_payload(self, guild_id: str, c: ChannelSpec, position: int) -> dict[str, Any]:
        payload: dict[str, Any] = {"id": c.id, "type": c.type, "name": c.name, "guild_id": guild_id}
        payload["parent_id"] = c.parent_id
        payload["flags"] = 0
        if c.type in THREAD_TYPES:
            payload.update(
                owner_id=self.bot_user_id,
                last_message_id=None,
                rate_limit_per_user=0,
                message_count=0,
                member_count=1,
                total_message_sent=0,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": self._joined_at,
                    "locked": False,
                    "create_timestamp": self._joined_at,
                },
            )
            return payload
        payload.update(position=position, permission_overwrites=[], nsfw=False)
        if c.type in (0, 5):
            payload.update(
                topic=c.topic, last_message_id=None, rate_limit_per_user=0, default_auto_archive_duration=1440
            )
        elif c.type in (2, 13):
            payload.update(bitrate=64000, user_limit=0, rtc_region=None, last_message_id=None)
        return payload

    def _full_member(self, user: dict[str, Any], roles: list[str] | None = None) -> dict[str, Any]:
        return {
            "user": copy.deepcopy(user),
            "roles": list(roles or []),
            "nick": None,
            "avatar": None,
            "joined_at": self._joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }

    def _member_payload(self, guild_id: str, user: dict[str, Any]) -> dict[str, Any]:
        member = self._guild_members.get(guild_id, {}).get(str(user["id"]))
        member = copy.deepcopy(member) if member is not None else self._full_member(user)
        member["user"] = copy.deepcopy(user)
        return member

    def _guild_spec(self, guild_id: str) -> GuildSpec | None:
        return next((g for g in self.guilds if g.id == guild_id), None)

    def _member_permissions(self, guild_id: str, user_id: str) -> int:
        g = self._guild_spec(guild_id)
        if g is None:
            return 0
        if g.owner_id == str(user_id):
            return ALL_PERMISSIONS
        member = self._guild_members.get(guild_id, {}).get(str(user_id))
        member_roles = set(member["roles"]) if member else set()
        perms = 0
        for r in g.roles:
            if r.id == g.id or r.id in member_roles:
                perms |= self._role_permissions(g, r)
        return perms

    def _role_permissions(self, g: GuildSpec, r: RoleSpec) -> int:
        if r.permissions is not None:
            return r.permissions
        if r.id == g.id:
            return EVERYONE_PERMISSIONS
        return 0

    def _role_payload(self, g: GuildSpec, r: RoleSpec) -> dict[str, Any]:
        return {
            "id": r.id,
            "name": r.name,
            "permissions": str(self._role_permissions(g, r)),
            "position": r.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "managed": False,
            "mentionable": False,
            "flags": 0,
            **({"tags": {"bot_id": r.bot_id}, "managed": True} if r.bot_id is not None else {}),
        }

    def _guild_payload(self, g: GuildSpec) -> dict[str, Any]:
        channels = [c for c in self._channels.values() if c.get("guild_id") == g.id]
        members = list(self._guild_members[g.id].values())
        return {
            "id": g.id,
            "name": g.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": g.owner_id,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "features": [],
            "roles": [self._role_payload(g, r) for r in g.roles],
            "emojis": [],
            "stickers": [],
            "max_members": 500000,
            "max_video_channel_users": 25,
            "application_id": None,
            "widget_enabled": False,
            "widget_channel_id": None,
            "incidents_data": None,
            "channels": [copy.deepcopy(c) for c in channels if c["type"] not in THREAD_TYPES],
            "threads": [copy.deepcopy(c) for c in channels if c["type"] in THREAD_TYPES],
            "members": [copy.deepcopy(m) for m in members if m["user"]["id"] == self.bot_user_id],
            "member_count": len(members),
            "large": False,
            "unavailable": False,
            "joined_at": self._joined_at,
            "lazy": True,
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
        }

    def _ensure_dm_channel(self, user_id: str, *, channel_id: str | None = None) -> dict[str, Any]:
        user_id = str(user_id)
        existing = self._dm_by_user.get(user_id)
        if existing is not None and (channel_id is None or channel_id == existing):
            return self.dm_channels[existing]
        cid = channel_id or self._snowflake()
        recipient = self.users.get(user_id) or self.human(user_id, f"user{user_id}")
        channel = {
            "id": cid,
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [copy.deepcopy(recipient)],
        }
        self.dm_channels[cid] = channel
        self._dm_by_user.setdefault(user_id, cid)
        return channel

    def _build_message(
        self,
        *,
        channel_id: str,
        guild_id: str | None,
        author: dict[str, Any],
        content: str,
        mentions: list[dict[str, Any]] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        flags: int = 0,
        msg_type: int = 0,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "id": self._snowflake(),
            "channel_id": channel_id,
            "author": copy.deepcopy(author),
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": list(attachments or []),
            "embeds": list(embeds or []),
            "components": list(components or []),
            "pinned": False,
            "type": msg_type,
            "flags": flags,
        }
        if guild_id is not None:
            msg["guild_id"] = guild_id
            member = self._member_payload(guild_id, author)
            member.pop("user", None)
            msg["member"] = member
        for mention in mentions or []:
            m = copy.deepcopy(mention)
            if guild_id is not None and "member" not in m:
                member = self._member_payload(guild_id, m)
                member.pop("user", None)
                m["member"] = member
            msg["mentions"].append(m)
        return msg

    def _store_message(self, msg: dict[str, Any]) -> None:
        self.messages[msg["id"]] = msg
        self.content_history[msg["id"]] = [msg["content"]]
        channel = self.channel(msg["channel_id"])
        if channel is not None:
            channel["last_message_id"] = msg["id"]
            if channel.get("type") in THREAD_TYPES:
                channel["message_count"] = channel.get("message_count", 0) + 1
                channel["total_message_sent"] = channel.get("total_message_sent", 0) + 1

    def _referenced_copy(self, message_id: Any) -> dict[str, Any] | None:
        stored = self.messages.get(str(message_id)) if message_id is not None else None
        if stored is None:
            return None
        ref = copy.deepcopy(stored)
        ref.pop("referenced_message", None)
        return ref

    # ------------------------------------------------------------------ internal: gateway

    def _event_allowed(self, session: _Session, event: str, data: dict[str, Any]) -> bool:
        if not self.enforce_intents:
            return True
        intents = session.intents
        in_guild = data.get("guild_id") is not None
        if event.startswith("MESSAGE_REACTION"):
            return bool(
                intents & (INTENT_GUILD_MESSAGE_REACTIONS if in_guild else INTENT_DIRECT_MESSAGE_REACTIONS)
            )
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK"):
            return bool(intents & (INTENT_GUILD_MESSAGES if in_guild else INTENT_DIRECT_MESSAGES))
        if event == "TYPING_START":
            return bool(intents & (INTENT_GUILD_MESSAGE_TYPING if in_guild else INTENT_DIRECT_MESSAGE_TYPING))
        if event.startswith("GUILD_MEMBER") and event != "GUILD_MEMBERS_CHUNK":
            return bool(intents & INTENT_GUILD_MEMBERS)
        if event == "PRESENCE_UPDATE":
            return bool(intents & INTENT_GUILD_PRESENCES)
        if event.startswith(("GUILD_", "CHANNEL_", "THREAD_")) and event != "GUILD_MEMBERS_CHUNK":
            return bool(intents & INTENT_GUILDS)
        return True

    def _shape_for(self, session: _Session, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Apply the message-content-intent redaction Discord does for clients without that intent."""
        if not self.enforce_intents or event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            return data
        if session.intents & INTENT_MESSAGE_CONTENT or data.get("guild_id") is None:
            return data
        author_id = str((data.get("author") or {}).get("id"))
        mentioned = any(str(m.get("id")) == self.bot_user_id for m in data.get("mentions") or [])
        if author_id == self.bot_user_id or mentioned:
            return data
        shaped = dict(data)
        shaped.update(content="", embeds=[], attachments=[], components=[])
        shaped.pop("poll", None)
        return shaped

    async def _broadcast(self, event: str, data: dict[str, Any], *, respect_intents: bool = True) -> None:
        for conn in list(self._connections):
            session = conn.session
            if session is None or conn.ws.closed:
                continue
            if respect_intents and not self._event_allowed(session, event, data):
                continue
            await self._send_dispatch(conn, event, self._shape_for(session, event, data))

    async def _send(self, conn: _Connection, payload: dict[str, Any]) -> None:
        async with conn.lock:
            await self._write(conn, payload)

    async def _send_dispatch(self, conn: _Connection, event: str, data: dict[str, Any]) -> None:
        session = conn.session
        if session is None:
            return
        async with conn.lock:
            session.seq += 1
            await self._write(conn, {"op": 0, "t": event, "s": session.seq, "d": data})

    async def _write(self, conn: _Connection, payload: dict[str, Any]) -> None:
        if conn.ws.closed:
            return
        text = json.dumps(payload, separators=(",", ":"))
        try:
            if conn.compressor is not None:
                raw = conn.compressor.compress(text.encode()) + conn.compressor.flush(zlib.Z_SYNC_FLUSH)
                await conn.ws.send_bytes(raw)
            else:
                await conn.ws.send_str(text)
        except (ConnectionResetError, RuntimeError):
            pass

    async def _handle_gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        query = dict(request.query)
        self.gateway_connections.append(query)
        if query.get("encoding", "json") != "json":
            await ws.close(code=4002, message=b"only encoding=json is supported by the fake")
            return ws
        compressor = zlib.compressobj() if query.get("compress") == "zlib-stream" else None
        conn = _Connection(ws=ws, query=query, compressor=compressor)
        self._connections.append(conn)
        await self.notify()
        try:
            await self._send(conn, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    text = msg.data
                elif msg.type == WSMsgType.BINARY:
                    text = msg.data.decode()
                else:
                    break
                try:
                    payload = json.loads(text)
                except ValueError:
                    await ws.close(code=4002, message=b"decode error")
                    break
                self.gateway_received.append(payload)
                await self._on_gateway_payload(conn, payload)
                await self.notify()
        finally:
            self._connections.remove(conn)
            await self.notify()
        return ws

    async def _on_gateway_payload(self, conn: _Connection, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        d = payload.get("d")
        if op == 1:
            self.heartbeats_received += 1
            await self._send(conn, {"op": 11})
        elif op == 2 and isinstance(d, dict):
            await self._on_identify(conn, d)
        elif op == 6 and isinstance(d, dict):
            await self._on_resume(conn, d)
        elif op == 8 and isinstance(d, dict):
            await self._on_request_members(conn, d)
        # op 3 (presence), op 4 (voice state) and unknown ops are only recorded

    async def _on_identify(self, conn: _Connection, d: dict[str, Any]) -> None:
        self.identifies.append(d)
        if self.expected_token is not None and d.get("token") != self.expected_token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if "intents" not in d:
            await conn.ws.close(code=4013, message=b"Invalid intent(s).")
            return
        shard = d.get("shard")
        session = _Session(
            session_id=secrets.token_hex(16), intents=int(d["intents"]), identify=d, shard=shard
        )
        self._sessions[session.session_id] = session
        conn.session = session
        guilds = [g for g in self.guilds if self._guild_on_shard(g.id, shard)]
        ready: dict[str, Any] = {
            "v": API_VERSION,
            "user": copy.deepcopy(self.bot_user),
            "user_settings": {},
            "guilds": [{"id": g.id, "unavailable": True} for g in guilds],
            "presences": [],
            "private_channels": [],
            "relationships": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["us-east"],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": self.application_id, "flags": 0},
            "auth": {},
        }
        if shard is not None:
            ready["shard"] = shard
        await self._send_dispatch(conn, "READY", ready)
        if session.intents & INTENT_GUILDS or not self.enforce_intents:
            for g in guilds:
                await self._send_dispatch(conn, "GUILD_CREATE", self._guild_payload(g))

    @staticmethod
    def _guild_on_shard(guild_id: str, shard: Any) -> bool:
        if not isinstance(shard, list) or len(shard) != 2 or not shard[1]:
            return True
        return (int(guild_id) >> 22) % int(shard[1]) == int(shard[0])

    async def _on_resume(self, conn: _Connection, d: dict[str, Any]) -> None:
        self.resumes.append(d)
        session = self._sessions.get(str(d.get("session_id")))
        if session is None or (self.expected_token is not None and d.get("token") != self.expected_token):
            await self._send(conn, {"op": 9, "d": False})
            return
        conn.session = session
        await self._send_dispatch(conn, "RESUMED", {})

    async def _on_request_members(self, conn: _Connection, d: dict[str, Any]) -> None:
        gid = str(d.get("guild_id"))
        members = list(self._guild_members.get(gid, {}).values())
        user_ids = d.get("user_ids")
        if user_ids is not None:
            wanted = {str(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])}
            members = [m for m in members if m["user"]["id"] in wanted]
        else:
            query = str(d.get("query") or "").lower()
            members = [m for m in members if m["user"]["username"].lower().startswith(query)]
            limit = int(d.get("limit") or 0)
            if limit:
                members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": gid,
            "members": copy.deepcopy(members),
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if d.get("presences"):
            chunk["presences"] = []
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        await self._send_dispatch(conn, "GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------------ internal: HTTP plumbing

    def _register_routes(self) -> None:
        table: list[tuple[str, str, _Handler]] = [
            ("GET", "/users/@me", self._r_get_me),
            ("POST", "/users/@me/channels", self._r_create_dm),
            ("GET", "/users/{user_id}", self._r_get_user),
            ("GET", "/gateway", self._r_gateway),
            ("GET", "/gateway/bot", self._r_gateway_bot),
            ("GET", "/oauth2/applications/@me", self._r_app_info),
            ("GET", "/applications/@me", self._r_app_info),
            ("GET", "/channels/{channel_id}", self._r_get_channel),
            ("GET", "/channels/{channel_id}/messages", self._r_history),
            ("POST", "/channels/{channel_id}/messages", self._r_create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._r_get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._r_edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._r_delete_message),
            ("POST", "/channels/{channel_id}/typing", self._r_typing),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._r_react),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._r_unreact),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._r_thread_from_message),
            ("POST", "/channels/{channel_id}/threads", self._r_thread),
            ("GET", "/guilds/{guild_id}", self._r_get_guild),
            ("GET", "/guilds/{guild_id}/channels", self._r_guild_channels),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._r_get_member),
            ("GET", "/applications/{application_id}/commands", self._r_get_commands),
            ("PUT", "/applications/{application_id}/commands", self._r_put_commands),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self._r_get_commands),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self._r_put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._r_interaction_callback),
            ("POST", "/webhooks/{application_id}/{token}", self._r_followup),
            ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", self._r_webhook_get),
            ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}", self._r_webhook_edit),
            ("DELETE", "/webhooks/{application_id}/{token}/messages/{message_id}", self._r_webhook_delete),
        ]
        for method, template, handler in table:
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            self._routes.append((method, re.compile(f"^{regex}/?$"), template, handler))

    def _match_route(self, method: str, path: str) -> tuple[str, _Handler, dict[str, str]] | None:
        for m, regex, template, handler in self._routes:
            if m != method:
                continue
            found = regex.match(path)
            if found:
                return template, handler, found.groupdict()
        return None

    async def _read_body(self, request: web.Request) -> tuple[Any, list[dict[str, Any]]]:
        if not request.body_exists:
            return None, []
        if request.content_type == "multipart/form-data":
            body: Any = None
            files: list[dict[str, Any]] = []
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):  # nested multipart: ignore
                    continue
                data = await part.read()
                if part.name == "payload_json":
                    body = json.loads(data.decode() or "null")
                elif part.filename is not None:
                    files.append(
                        {
                            "filename": part.filename,
                            "size": len(data),
                            "content_type": part.headers.get("Content-Type"),
                            "data": data,
                        }
                    )
            return body, files
        text = await request.text()
        if not text:
            return None, []
        try:
            return json.loads(text), []
        except ValueError:
            return text, []

    def _ratelimit_headers(self, method: str, template: str, params: dict[str, str]) -> dict[str, str]:
        bucket = hashlib.sha1(f"{method} {template}".encode()).hexdigest()[:32]
        headers = {"X-RateLimit-Bucket": bucket, "X-RateLimit-Scope": "user"}
        if self.bucket_limit is None:
            headers.update(
                {
                    "X-RateLimit-Limit": "50",
                    "X-RateLimit-Remaining": "49",
                    "X-RateLimit-Reset-After": "1.000",
                    "X-RateLimit-Reset": f"{time.time() + 1.0:.3f}",
                }
            )
        return headers

    def _bucket_check(
        self, method: str, template: str, params: dict[str, str]
    ) -> tuple[dict[str, str], float]:
        """Fixed-window limiter (only when bucket_limit is set). Returns (headers, retry_after or 0)."""
        assert self.bucket_limit is not None
        major = "/".join(params.get(k, "") for k in ("channel_id", "guild_id", "application_id", "token"))
        key = f"{method} {template} {major}"
        now = time.monotonic()
        reset_at, count = self._buckets.get(key, (0.0, 0))
        if now >= reset_at:
            reset_at, count = now + self.bucket_window, 0
        count += 1
        self._buckets[key] = (reset_at, count)
        reset_after = math.ceil(max(reset_at - now, 0.001) * 1000) / 1000  # never tell the client too early
        headers = {
            "X-RateLimit-Limit": str(self.bucket_limit),
            "X-RateLimit-Remaining": str(max(self.bucket_limit - count, 0)),
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        }
        return headers, (reset_after if count > self.bucket_limit else 0.0)

    def _take_delay(self, method: str, path: str) -> float:
        for delay in self._delays:
            if delay.method in ("*", method) and delay.path_contains in path:
                delay.remaining -= 1
                if delay.remaining <= 0:
                    self._delays.remove(delay)
                return delay.seconds
        return 0.0

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        for failure in self._failures:
            if failure.method in ("*", method) and failure.path_contains in path:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    @staticmethod
    def _json_response(status: int, payload: Any, headers: dict[str, str]) -> web.Response:
        headers = {"Via": "1.1 google", **headers}
        if payload is None and status == 204:
            return web.Response(status=204, headers=headers)
        body = json.dumps(payload).encode()
        # discord.py compares Content-Type to exactly "application/json" (no charset parameter)
        headers["Content-Type"] = "application/json"
        return web.Response(status=status, body=body, headers=headers)

    def _rate_limit_reply(
        self, retry_after: float, global_: bool, bucket: str
    ) -> tuple[int, Any, dict[str, str]]:
        payload = {"message": "You are being rate limited.", "retry_after": retry_after, "global": global_}
        headers = {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Limit": str(self.bucket_limit or 5),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Bucket": bucket,
            "X-RateLimit-Scope": "global" if global_ else "user",
        }
        if global_:
            headers["X-RateLimit-Global"] = "true"
        self.rate_limited_count += 1
        return 429, payload, headers

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.rstrip("/") == "/gateway" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._handle_gateway(request)
        if path.startswith("/attachments/"):
            response = self._serve_file(request)
            await self.notify()
            return response

        at = time.monotonic()
        method = request.method.upper()
        prefix = f"/api/v{API_VERSION}"
        rel = path[len(prefix) :] if path.startswith(prefix + "/") else path
        body, files = await self._read_body(request)
        query = dict(request.query)
        delay = self._take_delay(method, rel)
        if delay > 0:
            await asyncio.sleep(delay)  # simulated latency, not a wait for a result

        status: int
        payload: Any
        headers: dict[str, str] = {}
        matched = self._match_route(method, rel) if path.startswith(prefix + "/") else None
        template = matched[0] if matched else rel
        bucket = hashlib.sha1(f"{method} {template}".encode()).hexdigest()[:32]
        failure = self._take_failure(method, rel)
        try:
            if failure is not None:
                if failure.status == 429:
                    status, payload, headers = self._rate_limit_reply(
                        failure.retry_after, failure.global_, bucket
                    )
                else:
                    raise _ApiError(failure.status, failure.code or 0, failure.message)
            elif matched is None:
                status, payload = 404, {"message": "404: Not Found", "code": 0}
            else:
                template, handler, params = matched
                headers = self._ratelimit_headers(method, template, params)
                retry_after = 0.0
                if self.bucket_limit is not None:
                    limit_headers, retry_after = self._bucket_check(method, template, params)
                    headers.update(limit_headers)
                if retry_after > 0:
                    status, payload, headers = self._rate_limit_reply(retry_after, False, bucket)
                else:
                    self._check_auth(template, request)
                    status, payload = await handler(_Request(method, rel, params, body, query, files))
        except _ApiError as err:
            status, payload = err.status, err.payload()
        except Exception as exc:  # a bug in the fake: fail fast (a 500 would make discord.py retry for ~25 s)
            self.internal_errors.append(exc)
            status, payload = 400, {"message": f"FakeDiscord internal error: {exc!r}", "code": -1}

        self.calls.append(
            RecordedCall(
                method=method,
                path=rel,
                json=body,
                at=at,
                status=status,
                query=query,
                files=[f["filename"] for f in files],
                authorization=request.headers.get("Authorization"),
                response=payload,
                done_at=time.monotonic(),
            )
        )
        await self.notify()
        return self._json_response(status, payload, headers)

    def _check_auth(self, template: str, request: web.Request) -> None:
        if template.startswith(("/interactions/", "/webhooks/")):
            return  # token-authenticated routes
        auth = request.headers.get("Authorization")
        if auth is None or (self.expected_token is not None and auth != f"Bot {self.expected_token}"):
            raise _ApiError(401, 0, "401: Unauthorized")

    # ------------------------------------------------------------------ route handlers: users / meta

    async def _r_get_me(self, req: _Request) -> _Reply:
        return 200, copy.deepcopy(self.bot_user)

    async def _r_get_user(self, req: _Request) -> _Reply:
        user = self.users.get(req.params["user_id"])
        if user is None:
            raise _ApiError(404, 10013)
        return 200, copy.deepcopy(user)

    async def _r_create_dm(self, req: _Request) -> _Reply:
        body = req.body if isinstance(req.body, dict) else {}
        recipient = body.get("recipient_id")
        if recipient is None:
            raise _form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        return 200, copy.deepcopy(self._ensure_dm_channel(str(recipient)))

    async def _r_gateway(self, req: _Request) -> _Reply:
        return 200, {"url": self.gateway_url}

    async def _r_gateway_bot(self, req: _Request) -> _Reply:
        return 200, {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }

    async def _r_app_info(self, req: _Request) -> _Reply:
        return 200, {
            "id": self.application_id,
            "name": self.bot_user["username"],
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": copy.deepcopy(self.bot_user),
            "owner": copy.deepcopy(self.owner_user),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
            "tags": [],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "approximate_guild_count": len(self.guilds),
        }

    # ------------------------------------------------------------------ route handlers: channels / messages

    def _require_channel(self, channel_id: str) -> dict[str, Any]:
        channel = self.channel(channel_id)
        if channel is None:
            raise _ApiError(404, 10003)
        return channel

    def _require_message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        self._require_channel(channel_id)
        msg = self.messages.get(message_id)
        if msg is None or msg["channel_id"] != channel_id:
            raise _ApiError(404, 10008)
        return msg

    @staticmethod
    def _validate_content(raw: Any, *, has_other: bool) -> str:
        content = "" if raw is None else str(raw)
        if len(content) > MAX_CONTENT_LENGTH:
            raise _form_error(
                "content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_LENGTH} or fewer in length."
            )
        if not content and not has_other:
            raise _ApiError(400, 50006)
        return content

    def _attachments_from(
        self, files: list[dict[str, Any]], channel_id: str, ids: Iterator[str]
    ) -> list[dict[str, Any]]:
        """Attachment objects for files the bot uploaded, served like any other attachment."""
        return [
            self._store_file(channel_id, next(ids), f["filename"], f["data"], f.get("content_type"))
            for f in files
        ]

    def _snowflakes(self) -> Iterator[str]:
        while True:
            yield self._snowflake()

    async def _r_get_channel(self, req: _Request) -> _Reply:
        return 200, copy.deepcopy(self._require_channel(req.params["channel_id"]))

    async def _r_history(self, req: _Request) -> _Reply:
        cid = req.params["channel_id"]
        self._require_channel(cid)
        limit = max(1, min(int(req.query.get("limit", "50")), 100))
        msgs = [m for m in self.messages.values() if m["channel_id"] == cid]
        if "before" in req.query:
            msgs = [m for m in msgs if int(m["id"]) < int(req.query["before"])]
        if "after" in req.query:
            msgs = [m for m in msgs if int(m["id"]) > int(req.query["after"])]
            return 200, copy.deepcopy(list(reversed(msgs[:limit])))
        return 200, copy.deepcopy(list(reversed(msgs))[:limit])

    async def _r_create_message(self, req: _Request) -> _Reply:
        cid = req.params["channel_id"]
        channel = self._require_channel(cid)
        if channel["type"] not in TEXTLIKE_TYPES:
            raise _ApiError(400, 50008)
        body = req.body if isinstance(req.body, dict) else {}
        has_other = bool(body.get("embeds") or req.files or body.get("sticker_ids") or body.get("components"))
        content = self._validate_content(body.get("content"), has_other=has_other)
        gid = self._channel_guild.get(cid)
        msg = self._build_message(
            channel_id=cid,
            guild_id=gid,
            author=self.bot_user,
            content=content,
            attachments=self._attachments_from(req.files, cid, self._snowflakes()),
            embeds=body.get("embeds"),
            components=body.get("components"),
            flags=int(body.get("flags") or 0),
        )
        msg["tts"] = bool(body.get("tts", False))
        if body.get("nonce") is not None:
            msg["nonce"] = body["nonce"]
        ref = body.get("message_reference")
        if isinstance(ref, dict) and ref.get("message_id") is not None and ref.get("type", 0) == 0:
            ref_id = str(ref["message_id"])
            referenced = self._referenced_copy(ref_id)
            if referenced is None and ref.get("fail_if_not_exists", True):
                raise _form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
            msg["type"] = 19
            msg["message_reference"] = {
                "type": 0,
                "message_id": ref_id,
                "channel_id": str(ref.get("channel_id") or cid),
            }
            if gid is not None:
                msg["message_reference"]["guild_id"] = str(ref.get("guild_id") or gid)
            msg["referenced_message"] = referenced
        self._store_message(msg)
        if self.echo_bot_messages:
            await self._broadcast("MESSAGE_CREATE", msg)
        return 200, copy.deepcopy(msg)

    async def _r_get_message(self, req: _Request) -> _Reply:
        return 200, copy.deepcopy(self._require_message(req.params["channel_id"], req.params["message_id"]))

    def _apply_edit(self, msg: dict[str, Any], body: dict[str, Any], files: list[dict[str, Any]]) -> None:
        content = msg["content"]
        if "content" in body:
            content = body["content"] or ""
        embeds = (body["embeds"] or []) if "embeds" in body else msg["embeds"]
        attachments = msg["attachments"]
        if "attachments" in body:
            keep = {str(a.get("id")) for a in body["attachments"] or []}
            attachments = [a for a in attachments if a["id"] in keep]
        attachments = attachments + self._attachments_from(files, msg["channel_id"], self._snowflakes())
        content = self._validate_content(content, has_other=bool(embeds or attachments or msg["components"]))
        msg["content"] = content
        msg["embeds"] = embeds
        msg["attachments"] = attachments
        if "components" in body:
            msg["components"] = body["components"] or []
        if "flags" in body and body["flags"] is not None:
            msg["flags"] = (msg["flags"] & MESSAGE_FLAG_EPHEMERAL) | int(body["flags"])
        msg["flags"] &= ~MESSAGE_FLAG_LOADING
        msg["edited_timestamp"] = _now_iso()
        self.edit_counts[msg["id"]] = self.edit_counts.get(msg["id"], 0) + 1
        self.content_history.setdefault(msg["id"], []).append(content)

    async def _r_edit_message(self, req: _Request) -> _Reply:
        msg = self._require_message(req.params["channel_id"], req.params["message_id"])
        if msg["author"]["id"] != self.bot_user_id:
            raise _ApiError(403, 50005)
        self._apply_edit(msg, req.body if isinstance(req.body, dict) else {}, req.files)
        if self.echo_bot_messages:
            await self._broadcast("MESSAGE_UPDATE", msg)
        return 200, copy.deepcopy(msg)

    async def _delete(self, msg: dict[str, Any]) -> None:
        self.messages.pop(msg["id"], None)
        self.deleted_message_ids.append(msg["id"])
        if self.echo_bot_messages:
            event = {"id": msg["id"], "channel_id": msg["channel_id"]}
            if msg.get("guild_id") is not None:
                event["guild_id"] = msg["guild_id"]
            await self._broadcast("MESSAGE_DELETE", event)

    async def _r_delete_message(self, req: _Request) -> _Reply:
        msg = self._require_message(req.params["channel_id"], req.params["message_id"])
        if msg["author"]["id"] != self.bot_user_id:
            gid = msg.get("guild_id")
            if gid is None or not self._member_permissions(gid, self.bot_user_id) & _P["manage_messages"]:
                raise _ApiError(403, 50013, "Missing Permissions")
        await self._delete(msg)
        return 204, None

    async def _r_typing(self, req: _Request) -> _Reply:
        self._require_channel(req.params["channel_id"])
        self.typing_channels.append(req.params["channel_id"])
        return 204, None

    async def _r_react(self, req: _Request) -> _Reply:
        msg = self._require_message(req.params["channel_id"], req.params["message_id"])
        self.reactions.setdefault(msg["id"], []).append(req.params["emoji"])
        return 204, None

    async def _r_unreact(self, req: _Request) -> _Reply:
        msg = self._require_message(req.params["channel_id"], req.params["message_id"])
        emojis = self.reactions.get(msg["id"], [])
        if req.params["emoji"] in emojis:
            emojis.remove(req.params["emoji"])
        return 204, None

    def _create_thread(self, parent_id: str, body: dict[str, Any], thread_id: str | None) -> dict[str, Any]:
        parent = self._require_channel(parent_id)
        gid = self._channel_guild.get(parent_id)
        if gid is None or parent["type"] not in (0, 5):
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            raise _form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        spec = ChannelSpec(id=thread_id or self._snowflake(), name=name, type=int(body.get("type") or 11))
        spec.parent_id = parent_id
        payload = self._channel_payload(gid, spec, 0)
        payload["thread_metadata"]["auto_archive_duration"] = int(body.get("auto_archive_duration") or 1440)
        payload["member"] = {
            "id": spec.id,
            "user_id": self.bot_user_id,
            "join_timestamp": _now_iso(),
            "flags": 0,
        }
        self._channels[spec.id] = payload
        self._channel_guild[spec.id] = gid
        return payload

    async def _r_thread_from_message(self, req: _Request) -> _Reply:
        msg = self._require_message(req.params["channel_id"], req.params["message_id"])
        body = req.body if isinstance(req.body, dict) else {}
        if msg["id"] in self._channels:
            raise _ApiError(400, 160004, "A thread has already been created for this message")
        thread = self._create_thread(req.params["channel_id"], {**body, "type": 11}, msg["id"])
        msg["thread"] = copy.deepcopy(thread)
        await self._broadcast("THREAD_CREATE", {**thread, "newly_created": True})
        return 201, copy.deepcopy(thread)

    async def _r_thread(self, req: _Request) -> _Reply:
        body = req.body if isinstance(req.body, dict) else {}
        thread = self._create_thread(req.params["channel_id"], body, None)
        await self._broadcast("THREAD_CREATE", {**thread, "newly_created": True})
        return 201, copy.deepcopy(thread)

    # ------------------------------------------------------------------ route handlers: guilds

    def _require_guild(self, guild_id: str) -> GuildSpec:
        g = self._guild_spec(guild_id)
        if g is None:
            raise _ApiError(403, 50001)
        return g

    async def _r_get_guild(self, req: _Request) -> _Reply:
        payload = self._guild_payload(self._require_guild(req.params["guild_id"]))
        for key in ("channels", "threads", "members", "voice_states", "presences", "joined_at", "large"):
            payload.pop(key, None)
        return 200, payload

    async def _r_guild_channels(self, req: _Request) -> _Reply:
        g = self._require_guild(req.params["guild_id"])
        return 200, [
            copy.deepcopy(c)
            for c in self._channels.values()
            if c.get("guild_id") == g.id and c["type"] not in THREAD_TYPES
        ]

    async def _r_get_member(self, req: _Request) -> _Reply:
        g = self._require_guild(req.params["guild_id"])
        member = self._guild_members[g.id].get(req.params["user_id"])
        if member is None:
            raise _ApiError(404, 10007, "Unknown Member")
        return 200, copy.deepcopy(member)

    # ------------------------------------------------------------------ route handlers: app commands

    def _commands_for(self, req: _Request) -> tuple[str | None, list[dict[str, Any]]]:
        if req.params["application_id"] != self.application_id:
            raise _ApiError(403, 50001)
        gid = req.params.get("guild_id")
        if gid is None:
            return None, self.global_commands
        self._require_guild(gid)
        return gid, self.guild_commands.setdefault(gid, [])

    async def _r_get_commands(self, req: _Request) -> _Reply:
        _, commands = self._commands_for(req)
        return 200, copy.deepcopy(commands)

    async def _r_put_commands(self, req: _Request) -> _Reply:
        gid, old = self._commands_for(req)
        if not isinstance(req.body, list):
            raise _form_error("_root", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        by_key = {(c["name"], c.get("type", 1)): c for c in old}
        new: list[dict[str, Any]] = []
        for i, raw in enumerate(req.body):
            ctype = int(raw.get("type", 1))
            name = str(raw.get("name", ""))
            description = str(raw.get("description") or "")
            if ctype == 1 and (not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower()):
                raise _form_error(f"{i}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
            if ctype == 1 and not 1 <= len(description) <= 100:
                raise _form_error(
                    f"{i}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            previous = by_key.get((name, ctype))
            cmd: dict[str, Any] = {
                "id": previous["id"] if previous else self._snowflake(),
                "application_id": self.application_id,
                "version": self._snowflake(),
                "type": ctype,
                "name": name,
                "description": description,
                "options": raw.get("options", []),
                # A permission bit set as a string, whatever number form was sent (like Discord).
                "default_member_permissions": (
                    None if raw.get("default_member_permissions") is None
                    else str(int(raw["default_member_permissions"]))
                ),
                "dm_permission": raw.get("dm_permission", True),
                "contexts": raw.get("contexts"),
                "integration_types": raw.get("integration_types", [0]),
                "nsfw": bool(raw.get("nsfw", False)),
                "name_localizations": raw.get("name_localizations"),
                "description_localizations": raw.get("description_localizations"),
            }
            if gid is not None:
                cmd["guild_id"] = gid
            new.append(cmd)
        if gid is None:
            self.global_commands = new
        else:
            self.guild_commands[gid] = new
        return 200, copy.deepcopy(new)

    # ------------------------------------------------------------------ route handlers: interactions

    def _interaction_for_token(self, application_id: str, token: str) -> tuple[str, dict[str, Any]]:
        iid = self._token_to_interaction.get(token)
        if iid is None or application_id != self.application_id:
            raise _ApiError(404, 10015)
        return iid, self._interaction_meta[iid]

    def _interaction_message(
        self, meta: dict[str, Any], iid: str, data: dict[str, Any], *, flags: int, msg_type: int
    ) -> dict[str, Any]:
        content = self._validate_content(
            data.get("content"),
            has_other=bool(data.get("embeds") or data.get("components") or flags & MESSAGE_FLAG_LOADING),
        )
        msg = self._build_message(
            channel_id=meta["channel_id"],
            guild_id=meta["guild_id"],
            author=self.bot_user,
            content=content,
            embeds=data.get("embeds"),
            components=data.get("components"),
            flags=flags,
            msg_type=msg_type,
        )
        msg["webhook_id"] = self.application_id
        msg["application_id"] = self.application_id
        msg["tts"] = bool(data.get("tts", False))
        owners = self.interactions[iid].get("authorizing_integration_owners", {})
        msg["interaction_metadata"] = {
            "id": iid,
            "type": 2,
            "name": meta["name"],
            "command_type": 1,
            "user": copy.deepcopy(meta["user"]),
            "authorizing_integration_owners": owners,
        }
        return msg

    async def _r_interaction_callback(self, req: _Request) -> _Reply:
        iid = req.params["interaction_id"]
        meta = self._interaction_meta.get(iid)
        if meta is None or meta["token"] != req.params["token"]:
            raise _ApiError(404, 10062)
        if meta["acknowledged"]:
            raise _ApiError(400, 40060)
        if (
            self.interaction_deadline is not None
            and time.monotonic() - meta["created"] > self.interaction_deadline
        ):
            raise _ApiError(404, 10062)
        body = req.body if isinstance(req.body, dict) else {}
        rtype = int(body.get("type", 0))
        data = body.get("data") or {}
        message: dict[str, Any] | None = None
        if rtype == 4:
            flags = int(data.get("flags") or 0) & (MESSAGE_FLAG_EPHEMERAL | 4 | 4096)
            message = self._interaction_message(meta, iid, data, flags=flags, msg_type=20)
        elif rtype == 5:
            flags = MESSAGE_FLAG_LOADING | (int(data.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL)
            message = self._interaction_message(meta, iid, {}, flags=flags, msg_type=20)
        elif rtype not in (1, 6, 7, 8, 9, 10, 12):
            raise _form_error(
                "type", "BASE_TYPE_CHOICES", f"Value must be one of valid choices (got {rtype})."
            )
        meta["acknowledged"] = True
        self.interaction_callbacks[iid] = body
        if message is not None:
            self._store_message(message)
            meta["original_message_id"] = message["id"]
            if self.echo_bot_messages and not message["flags"] & MESSAGE_FLAG_EPHEMERAL:
                await self._broadcast("MESSAGE_CREATE", message)
        if req.query.get("with_response", "").lower() not in ("1", "true"):
            return 204, None
        interaction_info: dict[str, Any] = {"id": iid, "type": 2}
        resource: dict[str, Any] = {"type": rtype}
        if message is not None:
            interaction_info.update(
                response_message_id=message["id"],
                response_message_loading=rtype == 5,
                response_message_ephemeral=bool(message["flags"] & MESSAGE_FLAG_EPHEMERAL),
            )
            resource["message"] = copy.deepcopy(message)
        return 200, {"interaction": interaction_info, "resource": resource}

    def _webhook_message(self, req: _Request) -> tuple[str, dict[str, Any], dict[str, Any]]:
        iid, meta = self._interaction_for_token(req.params["application_id"], req.params["token"])
        mid = req.params["message_id"]
        if mid == "@original":
            mid = meta["original_message_id"]
            if mid is None:
                raise _ApiError(404, 10008)
        msg = self.messages.get(str(mid))
        if msg is None or (msg.get("interaction_metadata") or {}).get("id") != iid:
            raise _ApiError(404, 10008)
        return iid, meta, msg

    async def _r_followup(self, req: _Request) -> _Reply:
        iid, meta = self._interaction_for_token(req.params["application_id"], req.params["token"])
        if not meta["acknowledged"]:
            raise _ApiError(404, 10015)
        body = req.body if isinstance(req.body, dict) else {}
        flags = int(body.get("flags") or 0) & (MESSAGE_FLAG_EPHEMERAL | 4 | 4096)
        msg = self._interaction_message(meta, iid, body, flags=flags, msg_type=0)
        msg["attachments"] = self._attachments_from(req.files, msg["channel_id"], self._snowflakes())
        self._store_message(msg)
        if self.echo_bot_messages and not flags & MESSAGE_FLAG_EPHEMERAL:
            await self._broadcast("MESSAGE_CREATE", msg)
        if req.query.get("wait", "").lower() in ("1", "true"):
            return 200, copy.deepcopy(msg)
        return 204, None

    async def _r_webhook_get(self, req: _Request) -> _Reply:
        _, _, msg = self._webhook_message(req)
        return 200, copy.deepcopy(msg)

    async def _r_webhook_edit(self, req: _Request) -> _Reply:
        _, _, msg = self._webhook_message(req)
        self._apply_edit(msg, req.body if isinstance(req.body, dict) else {}, req.files)
        if self.echo_bot_messages and not msg["flags"] & MESSAGE_FLAG_EPHEMERAL:
            await self._broadcast("MESSAGE_UPDATE", msg)
        return 200, copy.deepcopy(msg)

    async def _r_webhook_delete(self, req: _Request) -> _Reply:
        _, _, msg = self._webhook_message(req)
        await self._delete(msg)
        return 204, None
