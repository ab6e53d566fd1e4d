"""A fake Slack Web API and Socket Mode server for tests.

This module holds :class:`FakeSlackAPI`, a real aiohttp server bound to 127.0.0.1 on a free port that
impersonates the parts of the Slack Web API a slack-bolt ``AsyncApp`` bot uses (``auth.test``,
``chat.postMessage`` / ``chat.update`` / ``chat.delete``, reactions, ``conversations.replies``,
``conversations.info``, ``users.info``, ``assistant.threads.setStatus`` and the native streaming
methods ``chat.startStream`` / ``chat.appendStream`` / ``chat.stopStream``), keeps the resulting
message state in memory, records every call, can inject failures, delays and rolling-window rate limits,
and serves a local Socket Mode websocket (``apps.connections.open`` → ``ws://127.0.0.1:PORT/socket``)
so an ``AsyncSocketModeHandler`` can connect and receive envelopes.

It also serves uploaded files at their ``url_private`` / ``url_private_download`` (only to a request
with the bot token, as Slack does; :meth:`FakeSlackAPI.add_file`, ``files.info``) and slash commands'
``response_url`` (:meth:`FakeSlackAPI.slash_command`, answers recorded in ``command_responses``).

It also holds helpers for building signed HTTP requests (:func:`signed_headers`) and Events API
payloads (:func:`app_mention_event`, :func:`message_event`, :func:`reaction_event`; both message
builders take ``files``).

Point a client at it with ``AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import WSMsgType, web

__all__ = [
    "CommandResponse",
    "FakeSlackAPI",
    "FileDownload",
    "RecordedCall",
    "SlackMessage",
    "app_mention_event",
    "message_event",
    "reaction_event",
    "signed_headers",
]

POST_MESSAGE_MAX_CHARS = 40_000
UPDATE_MAX_CHARS = 4_000
RATE_WINDOW_SECONDS = 60.0
# chat.postMessage is a "special tier": "1 per second per channel; short bursts >1 allowed, no
# guarantee" (https://api.slack.com/docs/rate-limits, "Posting messages"). Modelled as a token bucket
# per channel: `post_limit=(burst, per_second)`; the default used by the load tests is (3, 1.0).
DEFAULT_POST_LIMIT = (3, 1.0)
_FIRST_TS_MICROS = 1_700_000_000_000_000
# What Slack answers a file download without a valid `Authorization: Bearer` token: not a 401 but
# 200 with its HTML sign-in page (slackapi/bolt-js#2585, where Slack's maintainers point to the
# header, https://api.slack.com/types/file#auth; chenhg5/cc-connect#185 shows the page's first bytes).
SIGN_IN_PAGE = (
    b'<!DOCTYPE html><html lang="en-US"><head><title>Slack</title></head>'
    b"<body><h1>Sign in to your workspace</h1></body></html>"
)
# A response_url takes up to 5 answers within 30 minutes of the command
# (https://api.slack.com/interactivity/handling#message_responses).
RESPONSE_URL_USES = 5


@dataclass
class RecordedCall:
    """One Web API request the fake answered."""

    method: str  # e.g. "chat.postMessage"
    args: dict[str, Any]  # merged query/form/JSON args (JSON strings for blocks etc. left as given)
    token: str | None  # bearer token used (or the "token" argument)
    at: float  # clock reading (time.monotonic() by default) when the request arrived
    status: int  # HTTP status the fake answered
    response: dict[str, Any] = field(default_factory=dict)  # the JSON body the fake answered


@dataclass
class SlackMessage:
    """Current state of one message in the fake workspace."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    user: str
    bot_id: str | None
    edits: int = 0  # number of chat.update calls applied
    streaming: bool = False  # True between chat.startStream and chat.stopStream
    blocks: list[Any] | None = None
    reactions: set[str] = field(default_factory=set)  # reaction names currently on the message
    text_history: list[str] = field(default_factory=list)  # every text the message had, oldest first


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, fraction = ts.partition(".")
    try:
        return int(seconds), int(fraction.ljust(6, "0")[:6] or "0")
    except ValueError:
        return 0, 0


def _ts_to_micros(ts: str) -> int:
    seconds, fraction = _ts_key(ts)
    return seconds * 1_000_000 + fraction


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _chunks_text(chunks: Any) -> str:
    """Concatenates the text of ``markdown_text`` chunks (chat.*Stream ``chunks`` argument)."""
    parsed = _maybe_json(chunks)
    if not isinstance(parsed, list):
        return ""
    parts: list[str] = []
    for chunk in parsed:
        if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
            parts.append(str(chunk.get("text", "")))
    return "".join(parts)


@dataclass
class FakeFile:
    """One file uploaded to the fake workspace."""

    id: str
    name: str
    mimetype: str
    content: bytes


@dataclass
class FileDownload:
    """One request for a file's bytes."""

    file_id: str
    authorization: str | None  # the Authorization header as sent
    served: bool  # the file's bytes were sent (False: the sign-in page)
    path: str


@dataclass
class CommandResponse:
    """One message a bot sent to a slash command's response_url."""

    command_id: str
    body: dict[str, Any]
    text: str  # what the user sees: the markdown block's text, else `text`


class _Failure:
    def __init__(self, status: int, retry_after: float, error: str, times: int) -> None:
        self.status = status
        self.retry_after = retry_after
        self.error = error
        self.remaining = times


_Handler = Callable[[dict[str, Any]], dict[str, Any]]


class FakeSlackAPI:
    """In-memory Slack Web API + Socket Mode server on 127.0.0.1.

    Use ``async with FakeSlackAPI() as fake:`` (or ``await fake.start()`` / ``await fake.stop()``).
    """

    def __init__(
        self,
        *,
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        team_id: str = "T1",
        app_id: str = "A1",
        bot_token: str = "xoxb-test",
        rate_limits: dict[str, int] | None = None,
        post_limit: tuple[int, float] | None = None,
        app_token: str = "xapp-test",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.app_id = app_id
        self.bot_token = bot_token
        self.app_token = app_token
        self.rate_limits: dict[str, int] = dict(rate_limits or {})
        # chat.postMessage per channel: (burst, per second), or None for no limit.
        self.post_limit = post_limit
        self._post_buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, at)
        self.rate_limited: list[tuple[str, float]] = []  # (method, at) of every 429 the limits gave
        self.clock = clock

        self.calls: list[RecordedCall] = []
        self.messages: dict[tuple[str, str], SlackMessage] = {}
        self.deleted: list[SlackMessage] = []
        self.reactions: dict[tuple[str, str], set[str]] = {}
        self.statuses: dict[tuple[str, str], str] = {}  # (channel, thread_ts) -> assistant status
        self.users: dict[str, dict[str, Any]] = {}  # overrides for users.info
        self.channels: dict[str, dict[str, Any]] = {}  # overrides for conversations.info
        self.rate_limited_count = 0
        self.native_streaming_error: str | None = None
        # method -> seconds: every call to it is answered this much later (a slow Slack).
        self.delays: dict[str, float] = {}
        # method -> (until, status, error): every call to it answers that failure until the fake's
        # clock reaches `until` (an outage of a given length).
        self.outages: dict[str, tuple[float, int, str]] = {}
        # When True, events sent through send_socket_event are also stored as messages (as Slack would).
        self.seed_messages_from_events = True

        self.files: dict[str, FakeFile] = {}  # file id -> file, served at url_private(_download)
        self.file_downloads: list[FileDownload] = []  # every request for a file's bytes
        # False: the bot token lacks files:read, and downloads get the sign-in page like no token.
        self.files_read_scope = True
        self.command_responses: list[CommandResponse] = []  # every message sent to a response_url
        self._commands: dict[str, int] = {}  # response_url id -> answers it may still take
        self.acks: dict[str, dict[str, Any]] = {}  # envelope_id -> ack frame from the client
        self.socket_frames: list[dict[str, Any]] = []  # every JSON frame the socket client sent
        self.socket_connections = 0  # how many websocket connections were accepted in total

        self._ts_counter = _FIRST_TS_MICROS
        self._failures: dict[str, deque[_Failure]] = {}
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._cond = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._handlers: dict[str, _Handler] = {
            "auth.test": self._auth_test,
            "bots.info": self._bots_info,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "assistant.threads.setStatus": self._assistant_set_status,
            "conversations.replies": self._conversations_replies,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "files.info": self._files_info,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        """Starts the server on a free port; returns :attr:`base_url`."""
        if self._runner is not None:
            return self.base_url
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket", self._handle_socket)
        app.router.add_get("/files-pri/{team_file}/{name}", self._handle_file)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._handle_file)
        app.router.add_post("/commands/{team}/{command_id}", self._handle_response_url)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        return self.base_url

    async def stop(self) -> None:
        """Closes socket connections and shuts the server down."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"server stopping"), timeout=2.0)
        await runner.cleanup()

    async def __aenter__(self) -> FakeSlackAPI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlackAPI is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api/`` (ends with "/", as AsyncWebClient expects)."""
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``: where files and response URLs live (files.slack.com and
        hooks.slack.com in Slack)."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ inspection

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[SlackMessage]:
        """Parent + replies of a thread, in ts order (deleted messages excluded)."""
        found = [
            m
            for m in self.messages.values()
            if m.channel == channel and (m.ts == thread_ts or m.thread_ts == thread_ts)
        ]
        return sorted(found, key=lambda m: _ts_key(m.ts))

    def bot_replies(self, channel: str, thread_ts: str | None = None) -> list[SlackMessage]:
        """Messages posted by the bot in ``channel`` (only in that thread if ``thread_ts``), in ts order."""
        if thread_ts is None:
            pool = [m for m in self.messages.values() if m.channel == channel]
        else:
            pool = self.thread(channel, thread_ts)
        mine = [m for m in pool if m.bot_id == self.bot_id]
        return sorted(mine, key=lambda m: _ts_key(m.ts))

    def add_user_message(
        self, channel: str, text: str, *, user: str = "U1", thread_ts: str | None = None
    ) -> str:
        """Seeds a message written by a human; returns its (new, unique) ts."""
        ts = self._next_ts()
        self._store(
            SlackMessage(channel=channel, ts=ts, thread_ts=thread_ts, text=text, user=user, bot_id=None)
        )
        return ts

    def delete_message(self, channel: str, ts: str) -> None:
        """Deletes a message as a person (a moderator) would; later updates get message_not_found."""
        self.deleted.append(self.messages.pop((channel, ts)))

    def add_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        real_name: str | None = None,
        display_name: str | None = None,
        is_bot: bool = False,
        is_admin: bool = False,
        is_owner: bool = False,
        is_primary_owner: bool = False,
    ) -> None:
        """Configures what users.info answers for ``user_id`` (roles: a workspace admin or owner)."""
        self.users[user_id] = self._user_object(user_id, name, real_name, display_name, is_bot)
        self.users[user_id].update(is_admin=is_admin or is_owner or is_primary_owner, is_owner=is_owner,
                                   is_primary_owner=is_primary_owner)

    # ------------------------------------------------------------------ files

    def add_file(
        self, name: str, content: bytes, *, mimetype: str, size: int | None = None, user: str = "U1",
    ) -> dict[str, Any]:
        """Uploads a file; returns its file object as a message event's ``files`` carries it. ``size``
        overrides the size Slack reports (a wrong one, to test a bot does not trust it)."""
        file_id = f"F{uuid.uuid4().hex[:10].upper()}"
        self.files[file_id] = FakeFile(file_id, name, mimetype, content)
        return self._file_object(self.files[file_id], user=user, size=size)

    def tombstone_file(self, file_id: str = "FDELETED") -> dict[str, Any]:
        """A deleted file as events still mention it: no name, no URLs
        (https://api.slack.com/types/file, ``mode: "tombstone"``)."""
        return {"id": file_id, "mode": "tombstone"}

    def external_file(self, name: str, url: str, *, mimetype: str = "application/pdf") -> dict[str, Any]:
        """A file hosted elsewhere (Google Drive…): its ``url_private`` is the other service's link."""
        return {"id": f"F{uuid.uuid4().hex[:10].upper()}", "name": name, "title": name, "mimetype": mimetype,
                "mode": "external", "is_external": True, "external_type": "gdrive", "url_private": url}

    def unshared_file(self, file_object: dict[str, Any]) -> dict[str, Any]:
        """``file_object`` as an event carries a file whose details must be read with files.info
        (``file_access: "check_file_info"``, only the id)."""
        return {"id": file_object["id"], "file_access": "check_file_info"}

    def downloads_of(self, file_id: str) -> list[FileDownload]:
        return [d for d in self.file_downloads if d.file_id == file_id]

    # ------------------------------------------------------------------ slash commands

    def slash_command(
        self, text: str, *, command: str = "/lunos", user: str = "U1", channel: str = "C1",
    ) -> dict[str, str]:
        """The fields of a slash command request (form-encoded over HTTP, the payload of a Socket
        Mode ``slash_commands`` envelope), with a response_url this fake answers."""
        command_id = uuid.uuid4().hex[:12]
        self._commands[command_id] = RESPONSE_URL_USES
        return {
            "token": "verification-token",
            "team_id": self.team_id,
            "team_domain": "test",
            "channel_id": channel,
            "channel_name": f"channel-{channel.lower()}",
            "user_id": user,
            "user_name": f"user{user.lower()}",
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": f"{self.origin}/commands/{self.team_id}/{command_id}",
            "trigger_id": f"{uuid.uuid4().int % 10**10}.{uuid.uuid4().hex[:16]}",
        }

    def responses_to(self, fields: dict[str, str]) -> list[CommandResponse]:
        """What the bot answered the command ``fields`` (from :meth:`slash_command`)."""
        command_id = fields["response_url"].rsplit("/", 1)[-1]
        return [r for r in self.command_responses if r.command_id == command_id]

    def seed_from_event(self, payload: dict[str, Any]) -> None:
        """Stores the message an Events API payload refers to (app_mention / plain message), if new."""
        event = payload.get("event")
        if not isinstance(event, dict) or event.get("type") not in ("app_mention", "message"):
            return
        if event.get("subtype") not in (None, "file_share", "thread_broadcast"):
            return
        channel, ts = event.get("channel"), event.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str) or (channel, ts) in self.messages:
            return
        self._ts_counter = max(self._ts_counter, _ts_to_micros(ts))
        self._store(
            SlackMessage(
                channel=channel,
                ts=ts,
                thread_ts=event.get("thread_ts"),
                text=str(event.get("text", "")),
                user=str(event.get("user", "")),
                bot_id=event.get("bot_id"),
            )
        )

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: float = 1,
        error: str = "ratelimited",
        times: int = 1,
    ) -> None:
        """The next ``times`` calls to ``method`` answer HTTP ``status`` with {"ok": false, "error": error}.

        A 429 also carries ``Retry-After: ceil(retry_after)``. Queued failures are used in order.
        """
        self._failures.setdefault(method, deque()).append(_Failure(status, retry_after, error, times))

    def fail_for(self, method: str, seconds: float, *, status: int = 500, error: str = "internal_error") -> None:
        """Every call to ``method`` answers HTTP ``status`` for the next ``seconds`` of the fake's clock."""
        self.outages[method] = (self.clock() + seconds, status, error)

    def reset_rate_limits(self) -> None:
        """Forgets the calls counted in the rate-limit windows."""
        self._windows.clear()
        self._post_buckets.clear()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109 (API shape)
        """Waits until ``predicate()`` is true; re-checked whenever a call/socket frame is recorded.

        Raises TimeoutError.
        """
        async with asyncio.timeout(timeout), self._cond:
            await self._cond.wait_for(predicate)

    async def wait_for_call(self, method: str, count: int = 1, timeout: float = 5.0) -> RecordedCall:  # noqa: ASYNC109 (API shape)
        """Waits until ``method`` was called ``count`` times; returns that call."""
        await self.wait_for(lambda: len(self.calls_to(method)) >= count, timeout)
        return self.calls_to(method)[count - 1]

    # ------------------------------------------------------------------ socket mode (test side)

    async def wait_for_socket_client(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (API shape)
        await self.wait_for(lambda: bool(self._sockets), timeout)

    async def send_socket_event(
        self, payload: dict[str, Any], *, envelope_type: str = "events_api", retry_attempt: int = 0
    ) -> str:
        """Wraps ``payload`` in a Socket Mode envelope and sends it to the newest connection.

        Returns the envelope_id (use it with :meth:`wait_for_ack`).
        """
        await self.wait_for_socket_client()
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": envelope_type != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        if envelope_type == "events_api" and self.seed_messages_from_events:
            self.seed_from_event(payload)
        await self._sockets[-1].send_str(json.dumps(envelope))
        return envelope_id

    async def send_socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Sends Slack's {"type": "disconnect"} frame (the client should reconnect)."""
        await self.wait_for_socket_client()
        frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
        await self._sockets[-1].send_str(json.dumps(frame))

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109 (API shape)
        """The client's ack frame for ``envelope_id`` ({"envelope_id": ..., "payload"?: ...})."""
        await self.wait_for(lambda: envelope_id in self.acks, timeout)
        return self.acks[envelope_id]

    # ------------------------------------------------------------------ internals: state

    def _next_ts(self) -> str:
        self._ts_counter += 100
        return f"{self._ts_counter // 1_000_000}.{self._ts_counter % 1_000_000:06d}"

    def _store(self, message: SlackMessage) -> None:
        key = (message.channel, message.ts)
        message.reactions = self.reactions.setdefault(key, message.reactions)
        message.text_history.append(message.text)
        self.messages[key] = message

    def _message_dict(self, m: SlackMessage) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": "message",
            "ts": m.ts,
            "user": m.user,
            "text": m.text,
            "team": self.team_id,
        }
        if m.bot_id is not None:
            d["bot_id"] = m.bot_id
            if m.bot_id == self.bot_id:
                d["app_id"] = self.app_id
        if m.blocks is not None:
            d["blocks"] = m.blocks
        if m.thread_ts is not None and m.thread_ts != m.ts:
            d["thread_ts"] = m.thread_ts
            parent = self.messages.get((m.channel, m.thread_ts))
            if parent is not None:
                d["parent_user_id"] = parent.user
        else:
            replies = [r for r in self.thread(m.channel, m.ts) if r.ts != m.ts]
            if replies:
                d["thread_ts"] = m.ts
                d["reply_count"] = len(replies)
                d["latest_reply"] = replies[-1].ts
        if m.edits:
            d["edited"] = {"user": m.user, "ts": m.ts}
        if m.reactions:
            d["reactions"] = [
                {"name": n, "users": [self.bot_user_id], "count": 1} for n in sorted(m.reactions)
            ]
        return d

    def _user_object(
        self, user_id: str, name: str | None, real_name: str | None, display_name: str | None, is_bot: bool
    ) -> dict[str, Any]:
        name = name or f"user{user_id.lower()}"
        real_name = real_name or f"User {user_id}"
        display_name = display_name if display_name is not None else name
        return {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real_name,
            "deleted": False,
            "is_bot": is_bot,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "tz": "UTC",
            "profile": {"display_name": display_name, "real_name": real_name},
        }

    # ------------------------------------------------------------------ internals: HTTP

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        at = self.clock()
        args: dict[str, Any] = dict(request.query)
        body_error: str | None = None
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    loaded = json.loads(await request.text() or "{}")
                except ValueError:
                    body_error = "invalid_json"
                else:
                    if isinstance(loaded, dict):
                        args.update(loaded)
                    else:
                        body_error = "invalid_json"
            else:
                form = await request.post()
                for k, v in form.items():
                    args[k] = v if isinstance(v, str) else getattr(v, "filename", str(v))
        token: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :].strip() or None
        if "token" in args:
            token = str(args.pop("token"))

        delay = self.delays.get(method)
        if delay:
            await asyncio.sleep(delay)
        status, body, headers = self._answer(method, args, token, body_error, at)
        self.calls.append(
            RecordedCall(method=method, args=args, token=token, at=at, status=status, response=body)
        )
        await self._notify()
        return web.json_response(body, status=status, headers=headers)

    def _answer(
        self, method: str, args: dict[str, Any], token: str | None, body_error: str | None, at: float
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        outage = self.outages.get(method)
        if outage is not None and at < outage[0]:
            return outage[1], {"ok": False, "error": outage[2]}, {}
        queue = self._failures.get(method)
        if queue:
            failure = queue[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                queue.popleft()
            headers = {}
            if failure.status == 429:
                headers["Retry-After"] = str(max(0, math.ceil(failure.retry_after)))
            return failure.status, {"ok": False, "error": failure.error}, headers

        limit = self.rate_limits.get(method)
        if limit is not None:
            window = self._windows.setdefault((self.team_id, method), deque())
            while window and window[0] <= at - RATE_WINDOW_SECONDS:
                window.popleft()
            if len(window) >= limit:
                self.rate_limited_count += 1
                self.rate_limited.append((method, at))
                retry_after = max(1, math.ceil(window[0] + RATE_WINDOW_SECONDS - at))
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
            window.append(at)
        if method == "chat.postMessage" and self.post_limit is not None and args.get("channel"):
            wait = self._take_post_token(str(args["channel"]), at)
            if wait > 0:
                self.rate_limited_count += 1
                self.rate_limited.append((method, at))
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(max(1, math.ceil(wait)))}

        if body_error is not None:
            return 200, {"ok": False, "error": body_error}, {}
        auth_error = self._check_token(method, token)
        if auth_error is not None:
            return 200, {"ok": False, "error": auth_error}, {}
        handler = self._handlers.get(method)
        body = handler(args) if handler is not None else {"ok": True}
        headers = {}
        if method == "auth.test":
            headers["X-OAuth-Scopes"] = (
                "app_mentions:read,chat:write,commands,files:read,im:history,reactions:read,reactions:write,users:read"
            )
        return 200, body, headers

    def _take_post_token(self, channel: str, at: float) -> float:
        """One post to `channel` at `at`: 0 when the channel's bucket had a token (taken), else the
        seconds until it will have one (nothing taken)."""
        assert self.post_limit is not None
        burst, per_s = self.post_limit
        tokens, last = self._post_buckets.get(channel, (float(burst), at))
        tokens = min(float(burst), tokens + max(0.0, at - last) * per_s)
        if tokens < 1.0:
            self._post_buckets[channel] = (tokens, at)
            return (1.0 - tokens) / per_s
        self._post_buckets[channel] = (tokens - 1.0, at)
        return 0.0

    def _check_token(self, method: str, token: str | None) -> str | None:
        if token is None:
            return "not_authed"
        if method == "apps.connections.open":
            if token == self.app_token:
                return None
            return "not_allowed_token_type" if token == self.bot_token else "invalid_auth"
        if token == self.bot_token:
            return None
        return "not_allowed_token_type" if token == self.app_token else "invalid_auth"

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ internals: methods

    @staticmethod
    def _err(error: str) -> dict[str, Any]:
        return {"ok": False, "error": error}

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://test.slack.com/",
            "team": "Test",
            "user": "bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _bots_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "bot": {
                "id": self.bot_id,
                "deleted": False,
                "name": "bot",
                "app_id": self.app_id,
                "user_id": self.bot_user_id,
            },
        }

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"{self.socket_url}?ticket={uuid.uuid4()}&app_id={self.app_id}"}

    def _get_message(self, args: dict[str, Any], ts_arg: str = "ts") -> SlackMessage | dict[str, Any]:
        channel, ts = args.get("channel"), args.get(ts_arg)
        if not channel:
            return self._err("channel_not_found")
        if not ts:
            return self._err("invalid_arguments")
        message = self.messages.get((str(channel), str(ts)))
        return message if message is not None else self._err("message_not_found")

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return self._err("channel_not_found")
        markdown_text = args.get("markdown_text")
        text = markdown_text if markdown_text is not None else args.get("text")
        blocks = _maybe_json(args.get("blocks")) if args.get("blocks") is not None else None
        if text is None and blocks is None and args.get("attachments") is None:
            return self._err("no_text")
        text = "" if text is None else str(text)
        if len(text) > POST_MESSAGE_MAX_CHARS:
            return self._err("msg_too_long")
        thread_ts = args.get("thread_ts") or None
        message = SlackMessage(
            channel=str(channel),
            ts=self._next_ts(),
            thread_ts=None if thread_ts is None else str(thread_ts),
            text=text,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            blocks=blocks,
        )
        self._store(message)
        return {
            "ok": True,
            "channel": message.channel,
            "ts": message.ts,
            "message": self._message_dict(message),
        }

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        found = self._get_message(args)
        if isinstance(found, dict):
            return found
        markdown_text = args.get("markdown_text")
        text = markdown_text if markdown_text is not None else args.get("text")
        if text is not None and len(str(text)) > UPDATE_MAX_CHARS:
            return self._err("msg_too_long")
        if found.bot_id != self.bot_id:
            return self._err("cant_update_message")
        if text is not None:
            found.text = str(text)
        if args.get("blocks") is not None:
            found.blocks = _maybe_json(args["blocks"])
        found.edits += 1
        found.text_history.append(found.text)
        return {
            "ok": True,
            "channel": found.channel,
            "ts": found.ts,
            "text": found.text,
            "message": self._message_dict(found),
        }

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        found = self._get_message(args)
        if isinstance(found, dict):
            return found
        del self.messages[(found.channel, found.ts)]
        self.deleted.append(found)
        return {"ok": True, "channel": found.channel, "ts": found.ts}

    def _chat_start_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, thread_ts = args.get("channel"), args.get("thread_ts")
        if not channel:
            return self._err("channel_not_found")
        if not thread_ts:
            return self._err("invalid_arguments")
        text = str(args.get("markdown_text") or "") + _chunks_text(args.get("chunks"))
        message = SlackMessage(
            channel=str(channel),
            ts=self._next_ts(),
            thread_ts=str(thread_ts),
            text=text,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            streaming=True,
        )
        self._store(message)
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _streaming_message(self, args: dict[str, Any]) -> SlackMessage | dict[str, Any]:
        if self.native_streaming_error is not None:
            return self._err(self.native_streaming_error)
        found = self._get_message(args)
        if isinstance(found, dict):
            return found
        if not found.streaming:
            return self._err("message_not_in_streaming_state")
        return found

    def _chat_append_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        found = self._streaming_message(args)
        if isinstance(found, dict):
            return found
        found.text += str(args.get("markdown_text") or "") + _chunks_text(args.get("chunks"))
        found.text_history.append(found.text)
        return {"ok": True, "channel": found.channel, "ts": found.ts}

    def _chat_stop_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        found = self._streaming_message(args)
        if isinstance(found, dict):
            return found
        found.text += str(args.get("markdown_text") or "") + _chunks_text(args.get("chunks"))
        if args.get("blocks") is not None:
            found.blocks = _maybe_json(args["blocks"])
        found.streaming = False
        found.text_history.append(found.text)
        return {"ok": True, "channel": found.channel, "ts": found.ts, "message": self._message_dict(found)}

    def _reaction_target(self, args: dict[str, Any]) -> tuple[tuple[str, str], str] | dict[str, Any]:
        channel, ts, name = args.get("channel"), args.get("timestamp"), args.get("name")
        if not channel or not ts:
            return self._err("no_item_specified")
        if not name:
            return self._err("invalid_name")
        return (str(channel), str(ts)), str(name)

    def _reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        # Lenient: messages the fake never saw (e.g. from HTTP-mode events) can be reacted to as well.
        target = self._reaction_target(args)
        if isinstance(target, dict):
            return target
        key, name = target
        current = self.reactions.setdefault(key, set())
        if name in current:
            return self._err("already_reacted")
        current.add(name)
        return {"ok": True}

    def _reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        target = self._reaction_target(args)
        if isinstance(target, dict):
            return target
        key, name = target
        current = self.reactions.setdefault(key, set())
        if name not in current:
            return self._err("no_reaction")
        current.discard(name)
        return {"ok": True}

    def _assistant_set_status(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, thread_ts = args.get("channel_id"), args.get("thread_ts")
        if not channel or not thread_ts:
            return self._err("invalid_arguments")
        self.statuses[(str(channel), str(thread_ts))] = str(args.get("status", ""))
        return {"ok": True}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel"), args.get("ts")
        if not channel:
            return self._err("channel_not_found")
        if not ts:
            return self._err("invalid_arguments")
        messages = self.thread(str(channel), str(ts))
        if not messages:
            return self._err("thread_not_found")
        # oldest / latest bound the messages by ts (exclusive unless inclusive), as Slack does.
        inclusive = str(args.get("inclusive", "")).lower() in ("1", "true")
        if args.get("oldest"):
            oldest = _ts_key(str(args["oldest"]))
            messages = [m for m in messages if _ts_key(m.ts) > oldest or (inclusive and _ts_key(m.ts) == oldest)]
        if args.get("latest"):
            latest = _ts_key(str(args["latest"]))
            messages = [m for m in messages if _ts_key(m.ts) < latest or (inclusive and _ts_key(m.ts) == latest)]
        try:
            limit = max(1, int(args.get("limit") or 1000))
            offset = int(args.get("cursor") or 0)
        except ValueError:
            return self._err("invalid_cursor")
        page = messages[offset : offset + limit]
        has_more = offset + limit < len(messages)
        body: dict[str, Any] = {
            "ok": True,
            "messages": [self._message_dict(m) for m in page],
            "has_more": has_more,
        }
        if has_more:
            body["response_metadata"] = {"next_cursor": str(offset + limit)}
        return body

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return self._err("channel_not_found")
        channel = str(channel)
        if channel in self.channels:
            return {"ok": True, "channel": self.channels[channel]}
        is_im = channel.startswith("D")
        info: dict[str, Any] = {
            "id": channel,
            "created": 1_600_000_000,
            "is_channel": channel.startswith("C"),
            "is_group": channel.startswith("G"),
            "is_im": is_im,
            "is_mpim": False,
            "is_private": not channel.startswith("C"),
            "is_archived": False,
            "is_member": True,
            "context_team_id": self.team_id,
        }
        if is_im:
            info["user"] = "U1"
        else:
            info["name"] = f"channel-{channel.lower()}"
            info["topic"] = {"value": "", "creator": "", "last_set": 0}
            info["purpose"] = {"value": "", "creator": "", "last_set": 0}
        return {"ok": True, "channel": info}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user")
        if not user:
            return self._err("user_not_found")
        user = str(user)
        if user in self.users:
            return {"ok": True, "user": self.users[user]}
        if user == self.bot_user_id:
            return {"ok": True, "user": self._user_object(user, "bot", "Bot", "bot", True)}
        return {"ok": True, "user": self._user_object(user, None, None, None, False)}

    def _file_object(self, file: FakeFile, *, user: str, size: int | None) -> dict[str, Any]:
        base = f"{self.origin}/files-pri/{self.team_id}-{file.id}"
        return {
            "id": file.id,
            "created": int(time.time()),
            "timestamp": int(time.time()),
            "name": file.name,
            "title": file.name,
            "mimetype": file.mimetype,
            "filetype": file.name.rsplit(".", 1)[-1] if "." in file.name else "binary",
            "pretty_type": file.mimetype,
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": len(file.content) if size is None else size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{base}/{file.name}",
            "url_private_download": f"{base}/download/{file.name}",
            "permalink": f"https://test.slack.com/files/{user}/{file.id}/{file.name}",
            "has_rich_preview": False,
            "file_access": "visible",
        }

    def _files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(str(args.get("file", "")))
        if file is None:
            return self._err("file_not_found")
        return {"ok": True, "file": self._file_object(file, user="U1", size=None)}

    async def _handle_file(self, request: web.Request) -> web.Response:
        """A file's bytes, to a request with the bot token; anyone else gets the sign-in page."""
        team, _, file_id = request.match_info["team_file"].partition("-")
        file = self.files.get(file_id)
        auth = request.headers.get("Authorization")
        authorized = auth == f"Bearer {self.bot_token}" and self.files_read_scope
        served = authorized and file is not None and team == self.team_id
        self.file_downloads.append(FileDownload(file_id, auth, served, request.path))
        await self._notify()
        if not authorized:
            return web.Response(body=SIGN_IN_PAGE, content_type="text/html", charset="utf-8")
        if file is None or not served or request.match_info["name"] != file.name:
            return web.Response(status=404, text="file_not_found")
        return web.Response(body=file.content, content_type=file.mimetype)

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        """A bot's answer to a slash command: JSON ``{"text"?, "blocks"?, "response_type"?}``."""
        command_id = request.match_info["command_id"]
        remaining = self._commands.get(command_id, 0)
        if remaining <= 0:
            return web.Response(status=404, text="used_url")
        try:
            body = json.loads(await request.text())
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return web.Response(status=400, text="no_text")
        self._commands[command_id] = remaining - 1
        raw_blocks = body.get("blocks")
        blocks: list[Any] = raw_blocks if isinstance(raw_blocks, list) else []
        markdown = [str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "markdown"]
        shown = "\n".join(markdown) if markdown else str(body.get("text", ""))
        self.command_responses.append(CommandResponse(command_id, body, shown))
        await self._notify()
        return web.Response(text="ok")

    # ------------------------------------------------------------------ internals: websocket

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.socket_connections += 1
        try:
            hello = {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {"host": "fake-slack", "build_number": 1, "approximate_connection_time": 3600},
                "connection_info": {"app_id": self.app_id},
            }
            await ws.send_str(json.dumps(hello))
            await self._notify()
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(frame, dict):
                    continue
                self.socket_frames.append(frame)
                envelope_id = frame.get("envelope_id")
                if isinstance(envelope_id, str):
                    self.acks[envelope_id] = frame
                await self._notify()
        finally:
            with contextlib.suppress(ValueError):
                self._sockets.remove(ws)
            with contextlib.suppress(Exception):
                await self._notify()
        return ws


# ---------------------------------------------------------------------- helpers for tests


def signed_headers(
    body: bytes,
    signing_secret: str,
    *,
    timestamp: int | None = None,
    retry_num: int | None = None,
    retry_reason: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Headers Slack sends with an HTTP request (Events API JSON, or a slash command's form with
    ``content_type="application/x-www-form-urlencoded"``), signed with ``signing_secret``."""
    ts = int(time.time()) if timestamp is None else timestamp
    base = b"v0:" + str(ts).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={digest}",
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
    if retry_reason is not None:
        headers["X-Slack-Retry-Reason"] = retry_reason
    return headers


def _event_envelope(
    event: dict[str, Any], *, team_id: str, api_app_id: str, event_id: str, bot_user_id: str
) -> dict[str, Any]:
    event_time = _ts_key(str(event.get("ts", "0")))[0] or int(time.time())
    return {
        "token": "verification-token",
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-fake-{event_id}",
    }


def app_mention_event(
    *,
    text: str,
    channel: str = "C1",
    user: str = "U1",
    ts: str,
    thread_ts: str | None = None,
    team_id: str = "T1",
    api_app_id: str = "A1",
    event_id: str,
    bot_user_id: str = "UBOT",
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A full Events API ``event_callback`` envelope carrying an ``app_mention`` event (with
    ``files`` when the mention came with uploads, as Slack sends them)."""
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": ts,
        "client_msg_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{channel}/{ts}")),
        "team": team_id,
        "channel": channel,
        "event_ts": ts,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    if files:
        event.update(files=files, upload=False)
    return _event_envelope(
        event, team_id=team_id, api_app_id=api_app_id, event_id=event_id, bot_user_id=bot_user_id
    )


def message_event(
    *,
    text: str,
    channel: str = "D1",
    channel_type: str = "im",
    user: str = "U1",
    ts: str,
    thread_ts: str | None = None,
    team_id: str = "T1",
    api_app_id: str = "A1",
    event_id: str,
    bot_user_id: str = "UBOT",
    subtype: str | None = None,
    bot_id: str | None = None,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A full Events API ``event_callback`` envelope carrying a ``message`` event; with ``files``,
    subtype ``file_share`` unless another is given, as Slack sends a message with uploads."""
    if files and subtype is None:
        subtype = "file_share"
    event: dict[str, Any] = {"type": "message"}
    if subtype is not None:
        event["subtype"] = subtype
    event.update({"user": user, "text": text, "ts": ts, "team": team_id})
    if bot_id is not None:
        event["bot_id"] = bot_id
    else:
        event["client_msg_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{channel}/{ts}"))
    event.update({"channel": channel, "event_ts": ts, "channel_type": channel_type})
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    if files:
        event.update(files=files, upload=False)
    return _event_envelope(
        event, team_id=team_id, api_app_id=api_app_id, event_id=event_id, bot_user_id=bot_user_id
    )


def reaction_event(
    *,
    reaction: str,
    channel: str,
    ts: str,
    user: str = "U1",
    item_user: str | None = "UBOT",
    added: bool = True,
    team_id: str = "T1",
    api_app_id: str = "A1",
    event_id: str,
    bot_user_id: str = "UBOT",
) -> dict[str, Any]:
    """A full ``event_callback`` envelope carrying ``reaction_added`` (or, with ``added=False``,
    ``reaction_removed``) on the message ``channel``/``ts``, as
    https://api.slack.com/events/reaction_added shows it."""
    event: dict[str, Any] = {
        "type": "reaction_added" if added else "reaction_removed",
        "user": user,
        "reaction": reaction,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": f"{int(time.time())}.000200",
    }
    if item_user is not None:
        event["item_user"] = item_user
    return _event_envelope(
        event, team_id=team_id, api_app_id=api_app_id, event_id=event_id, bot_user_id=bot_user_id
    )
