"""The fakes of `tests/fakes/`, each served from its own child process for the process-level
benchmarks, plus a counting Redis proxy. The fakes are used unchanged; what is added here
(subclasses, never edits) is only what a measurement needs:

- `TimedChatAPI` stamps, per request, when the first and the last piece of model text left the fake
  (the fake's sleeps say when a token is due, not when an overloaded fake got round to sending it);
- `MultiWorkspaceSlack` keeps Slack's per-workspace rate windows per workspace, the workspace read
  from the channel id (`C<team digits><4 digits>`), so one fake serves many workspaces;
- every listening socket takes a backlog of `LISTEN_BACKLOG`, so a burst of 1,000 connections is
  not turned into SYN retries (a one-second stall) by aiohttp's default of 128.

Each child answers commands (see `children.serve_commands`); recorded calls are exported as
tuples, small enough to pickle for a 1,000-conversation round.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from benchmarks.children import serve_commands
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import FakeSlackAPI

LISTEN_BACKLOG = 4096
SLACK_POST_LIMIT = (3, 1.0)  # chat.postMessage: "1 per second per channel, short bursts allowed"
TAG = re.compile(r"\[(q\d+)\]")  # every benchmark question carries its conversation's tag
EMPTY_CONTENT = b'"content":""'
SOME_CONTENT = b'"content":"'


def tag_of(body: dict[str, Any] | None) -> str | None:
    """The tag of the newest user message in a chat-completions body."""
    messages = (body or {}).get("messages") or []
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            found = TAG.search(str(message.get("content", "")))
            return found.group(1) if found else None
    return None


async def _listen(app_runner: web.AppRunner) -> int:
    site = web.TCPSite(app_runner, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)
    await site.start()
    return int(app_runner.addresses[0][1])


# --------------------------------------------------------------------------- chat API


class TimedChatAPI(FakeChatAPI):
    """`FakeChatAPI` that records, per streamed answer, (tag, arrived, first text sent, last text sent)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(backlog=LISTEN_BACKLOG, **kwargs)  # a deep backlog (the module docstring)
        self.stamps: dict[int, list[Any]] = {}

    async def _prepare(self, request: web.Request, exchange: Any, content_type: str,
                       length: int | None = None) -> web.StreamResponse:
        response = await super()._prepare(request, exchange, content_type, length)
        if content_type != "text/event-stream":
            return response
        stamp: list[Any] = [tag_of(exchange.record.body), exchange.record.at, None, None]
        self.stamps[id(exchange)] = stamp
        write = response.write

        async def timed_write(data: bytes) -> None:
            await write(data)
            if SOME_CONTENT in data and EMPTY_CONTENT not in data:
                now = time.monotonic()
                if stamp[2] is None:
                    stamp[2] = now
                stamp[3] = now

        response.write = timed_write  # type: ignore[method-assign]
        return response


def serve_chat_api(conn: Connection, api_key: str, model: str, behaviour: dict[str, Any]) -> None:
    """Child entry point: the timed fake chat API answering `model` with `Behaviour(**behaviour)`."""

    async def main() -> None:
        api = TimedChatAPI(api_key=api_key, models=(model,))
        api.script(model, Behaviour(**behaviour))
        base_url = await api.start()

        async def stamps() -> list[tuple[Any, ...]]:
            return [tuple(s) for s in api.stamps.values()]

        async def clear() -> None:
            api.stamps.clear()
            api.requests.clear()

        async def done() -> int:
            """Answers streamed to the end (every request finished)."""
            return sum(r.finished.is_set() for r in api.requests)

        try:
            await serve_commands(conn, base_url, {"stamps": stamps, "clear": clear, "done": done})
        finally:
            await api.stop()

    asyncio.run(main())


# --------------------------------------------------------------------------- Slack


def team_of_channel(channel: str) -> str | None:
    """`C0070012` → `T007`: the benchmark's channel ids carry their workspace."""
    if len(channel) > 5 and channel[0] == "C" and channel[1:].isdigit():
        return "T" + channel[1:-4]
    return None


class MultiWorkspaceSlack(FakeSlackAPI):
    """`FakeSlackAPI` whose rate windows are per workspace of the channel a call names."""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        self._port = await _listen(runner)
        return self.base_url

    def _answer(self, method: str, args: dict[str, Any], token: str | None, body_error: str | None,
                at: float) -> tuple[int, dict[str, Any], dict[str, str]]:
        home = self.team_id
        team = team_of_channel(str(args.get("channel") or args.get("channel_id") or ""))
        self.team_id = team or home
        try:
            return super()._answer(method, args, token, body_error, at)
        finally:
            self.team_id = home


def _squeezed(text: str) -> str:
    return "".join(text.split())


STREAMING_INDICATORS = "▍▌"  # Slack's and Discord's, stripped from growing text before comparing


def answer_chars(text: str, squeezed_answer: str) -> int:
    """How many characters of model text `text` shows: 0 unless it is a piece of the answer (an
    apology, a placeholder or an error note is not model text)."""
    piece = _squeezed(text.rstrip().rstrip(STREAMING_INDICATORS))
    return len(piece) if piece and piece in squeezed_answer else 0


class SlackThreads:
    """Replays recorded calls to tell when each thread's reply shows the whole answer: one message
    edited to it, or (a reply delivered by posts) its messages together, whitespace aside."""

    def __init__(self, answer: str) -> None:
        self._answer = _squeezed(answer)
        self._thread_of: dict[tuple[str, str], tuple[str, str]] = {}
        self._texts: dict[tuple[str, str], dict[str, str]] = {}
        self.complete: set[tuple[str, str]] = set()

    def feed(self, call: Any) -> tuple[int, bool]:
        """(characters of the call's text, whether its thread became complete with it)."""
        args = call.args
        text = args.get("markdown_text")
        if text is None:
            text = args.get("text")
        text = "" if text is None else str(text)
        shown = answer_chars(text, self._answer)
        if call.status != 200 or call.method not in ("chat.postMessage", "chat.update"):
            return shown, False
        channel = str(args.get("channel") or "")
        if call.method == "chat.postMessage":
            thread = (channel, str(args.get("thread_ts") or ""))
            ts = str((call.response or {}).get("ts") or "")
            self._thread_of[(channel, ts)] = thread
        else:
            ts = str(args.get("ts") or "")
            found = self._thread_of.get((channel, ts))
            if found is None:
                return shown, False
            thread = found
        texts = self._texts.setdefault(thread, {})
        texts[ts] = text
        if thread in self.complete:
            return shown, False
        if _squeezed("".join(texts[k] for k in sorted(texts))) == self._answer:
            self.complete.add(thread)
            return shown, True
        return shown, False


def _slack_call_row(call: Any, threads: SlackThreads) -> tuple[Any, ...]:
    args = call.args
    chars, completes = threads.feed(call)
    ts = args.get("ts") or (call.response or {}).get("ts")
    return (call.method, str(args.get("channel") or args.get("channel_id") or ""), ts,
            args.get("thread_ts"), args.get("timestamp"), chars, completes, call.at, call.status)


def serve_slack(conn: Connection, rate_limits: dict[str, int], answer: str, bot_token: str) -> None:
    """Child entry point: the fake Slack Web API. Calls are exported as rows of
    (method, channel, ts, thread_ts, reaction ts, chars, is final text, at, status)."""

    async def main() -> None:
        options: dict[str, Any] = {}
        if "post_limit" in inspect.signature(FakeSlackAPI).parameters:
            # chat.postMessage's per-channel limit, where the fake models it.
            options["post_limit"] = SLACK_POST_LIMIT
        fake = MultiWorkspaceSlack(rate_limits=rate_limits, bot_token=bot_token, **options)
        await fake.start()
        live = [SlackThreads(answer), 0]  # replayed so far, and how many calls that was

        async def calls() -> list[tuple[Any, ...]]:
            threads = SlackThreads(answer)
            return [_slack_call_row(c, threads) for c in fake.calls]

        async def finals() -> int:
            threads = live[0]
            assert isinstance(threads, SlackThreads)
            for call in fake.calls[int(live[1]):]:
                threads.feed(call)
            live[1] = len(fake.calls)
            return len(threads.complete)

        async def clear() -> None:
            fake.calls.clear()
            live[:] = [SlackThreads(answer), 0]

        async def rate_limited() -> int:
            return fake.rate_limited_count

        async def delay(method: str, seconds: float) -> None:
            """A slow Slack: every call to `method` is answered `seconds` late (0: not any more)."""
            if seconds > 0:
                fake.delays[method] = seconds
            else:
                fake.delays.pop(method, None)

        try:
            await serve_commands(conn, {"base_url": fake.base_url, "app_id": fake.app_id},
                                 {"calls": calls, "finals": finals, "clear": clear,
                                  "rate_limited": rate_limited, "delay": delay})
        finally:
            await fake.stop()

    asyncio.run(main())


# --------------------------------------------------------------------------- Discord


def serve_discord(conn: Connection, channels: int, bucket_limit: int, bucket_window: float,
                  answer: str) -> None:
    """Child entry point: the fake Discord (REST + gateway) with one guild of `channels` text
    channels and per-route buckets. Calls are exported as rows of
    (kind, channel, message id, replied-to id, chars, is final text, at, status)."""
    # Imported here: discord.py is a heavy import only this child needs.
    from tests.fakes.discord_api import ChannelSpec, FakeDiscord, GuildSpec, RoleSpec

    guild_id = "2000"
    guild = GuildSpec(
        id=guild_id, name="Bench Guild",
        channels=[ChannelSpec(id=str(100_000 + i), name=f"c{i}", type=0) for i in range(channels)],
        roles=[RoleSpec(id=guild_id, name="@everyone"), RoleSpec(id="4100", name="FakeBot", position=2,
                                                                bot_id="1000")],
    )
    squeezed_answer = _squeezed(answer)
    message_path = re.compile(r"^/channels/(\d+)/messages(?:/(\d+))?$")
    typing_path = re.compile(r"^/channels/(\d+)/typing$")

    def row(call: Any) -> tuple[Any, ...] | None:
        typing = typing_path.match(call.path)
        if typing:
            return ("typing", typing.group(1), None, None, 0, False, call.at, call.status)
        match = message_path.match(call.path)
        if not match or call.method not in ("POST", "PATCH"):
            return None
        body = call.json if isinstance(call.json, dict) else {}
        content = str(body.get("content") or "")
        if call.method == "POST":
            reference = body.get("message_reference") or {}
            sent = call.response if isinstance(call.response, dict) else {}
            return ("post", match.group(1), sent.get("id"), reference.get("message_id"),
                    answer_chars(content, squeezed_answer), content == answer, call.at, call.status)
        return ("edit", match.group(1), match.group(2), None, answer_chars(content, squeezed_answer),
                content == answer, call.at, call.status)

    async def main() -> None:
        fake = FakeDiscord(guilds=[guild], bucket_limit=bucket_limit, bucket_window=bucket_window)
        # FakeDiscord.start with a deep listen backlog (see the module docstring).
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", fake._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        fake._runner = runner
        fake._port = await _listen(runner)
        human = fake.human("5000", "alice")
        finals_seen = [0, 0]

        async def wait_ready(limit_s: float) -> None:
            await fake.wait_for_identify(limit_s)

        async def send(events: list[tuple[str, str, str]]) -> list[tuple[str, float]]:
            """MESSAGE_CREATEs, one after the other as fast as the gateway takes them; returns
            (message id, monotonic time just before its dispatch) for each."""
            sent: list[tuple[str, float]] = []
            mention = [fake.bot_user]
            for channel_id, content, user_id in events:
                author = dict(human, id=user_id, username=f"user{user_id}")
                at = time.monotonic()
                message = await fake.send_message_create(channel_id=channel_id, content=content,
                                                         author=author, mentions=mention)
                sent.append((str(message["id"]), at))
            return sent

        async def calls() -> list[tuple[Any, ...]]:
            return [r for r in map(row, fake.calls) if r is not None]

        async def finals() -> int:
            for call in fake.calls[finals_seen[0]:]:
                if call.method in ("POST", "PATCH") and call.status == 200 and isinstance(call.json, dict):
                    finals_seen[1] += call.json.get("content") == answer
            finals_seen[0] = len(fake.calls)
            return finals_seen[1]

        async def clear() -> None:
            fake.calls.clear()
            finals_seen[:] = [0, 0]

        async def rate_limited() -> int:
            return fake.rate_limited_count

        async def internal_errors() -> list[str]:
            return [repr(e) for e in fake.internal_errors]

        ready = {"api_base": fake.api_base, "gateway_url": fake.gateway_url, "guild_id": guild_id,
                 "first_channel": 100_000}
        try:
            await serve_commands(conn, ready, {
                "wait_ready": wait_ready, "send": send, "calls": calls, "finals": finals, "clear": clear,
                "rate_limited": rate_limited, "internal_errors": internal_errors,
            })
        finally:
            await fake.stop()

    asyncio.run(main())


# --------------------------------------------------------------------------- Redis round trips


def _resp_commands(data: bytes, limit: int = 4) -> list[tuple[str, str]]:
    """(command, first key) of the first `limit` RESP commands in `data` (a script's first key for
    EVAL/EVALSHA); stops at anything it cannot parse (a command split across reads is fine to
    miss: only the first one counts)."""
    found: list[tuple[str, str]] = []
    pos = 0
    try:
        while pos < len(data) and len(found) < limit and data[pos:pos + 1] == b"*":
            end = data.index(b"\r\n", pos)
            count = int(data[pos + 1:end])
            pos = end + 2
            parts: list[str] = []
            for _ in range(count):
                end = data.index(b"\r\n", pos)
                size = int(data[pos + 1:end])
                pos = end + 2
                if len(parts) < 4:
                    parts.append(data[pos:pos + size].decode("utf-8", "replace"))
                pos += size + 2
            command = parts[0].upper() if parts else ""
            key_at = 3 if command in ("EVAL", "EVALSHA") else 1
            found.append((command, parts[key_at] if len(parts) > key_at else ""))
    except ValueError:
        pass
    return found


def classify_round_trip(data: bytes) -> str:
    """What a round trip was for, from the first keyed command the client sent in it."""
    for command, key in _resp_commands(data):
        if command in ("MULTI", "EXEC"):
            continue
        if command in ("PING", "CLIENT", "HELLO", "SELECT", "INFO"):
            return "connection"
        if ":event:" in key or "refusal:" in key:
            return "dedupe"
        if key.endswith(":lock"):
            return "lock"
        if key.endswith((":history", ":reset")):
            return "history"
        if ":usage:" in key:
            return "usage"
        if ":bucket:" in key:
            return "rate budget"
        if ":msgconv:" in key:
            return "message index"
        if command in ("EVALSHA", "EVAL", "SCRIPT"):
            return "script"
        return f"other ({command})"
    return "other"


def serve_redis_proxy(conn: Connection, upstream_port: int) -> None:
    """Child entry point: a TCP proxy to Redis counting round trips (a client write after the
    server last spoke on that connection starts one) by what they were for."""

    async def main() -> None:
        counts: dict[str, int] = {}

        async def pipe_client(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream_port)
            waiting_for_server = [False]

            async def upstream() -> None:
                while data := await client_r.read(65536):
                    if not waiting_for_server[0]:
                        kind = classify_round_trip(data)
                        counts[kind] = counts.get(kind, 0) + 1
                        waiting_for_server[0] = True
                    server_w.write(data)
                    await server_w.drain()
                server_w.close()

            async def downstream() -> None:
                while data := await server_r.read(65536):
                    waiting_for_server[0] = False
                    client_w.write(data)
                    await client_w.drain()
                client_w.close()

            await asyncio.gather(upstream(), downstream(), return_exceptions=True)

        server = await asyncio.start_server(pipe_client, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)
        port = server.sockets[0].getsockname()[1]

        async def read_counts() -> dict[str, int]:
            return dict(counts)

        async def reset() -> None:
            counts.clear()

        try:
            await serve_commands(conn, port, {"counts": read_counts, "reset": reset})
        finally:
            server.close()

    asyncio.run(main())


def json_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
