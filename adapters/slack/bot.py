"""`SlackBot`: one Slack app (its own tokens, its own app id) answering through the engine.

Channel mentions are answered in the message's thread, later messages in a thread the bot has talked
in without a new mention (unless `require_mention`), DMs in place. Bolt (`AsyncApp`) receives the
events — over Socket Mode when there is an app token, else at `POST /slack/<bot>/events` on the shared
HTTP server with Bolt's signature check — and acks at once: each answer runs in a task of this bot,
which `stop` lets finish. Dedupe of retries and duplicates is the engine's (Redis, across replicas).

No Slack call runs before the engine has put up the working signal: the author's name comes from
the cache (their id stands in for it on a cold cache, and the name is looked up after the turn),
a thread is read for seeding only by the engine, under the conversation lock, and a message's files
are downloaded only when the engine reads them (`files.SlackFiles`).

Besides messages: 👍 / 👎 reactions (`reaction_added` / `reaction_removed`) become votes on the
bot's answers (`ConversationEngine.vote`, which counts only reactions on its own answers, once per
user), and `/lunos` shows or changes the channel's persona (`ConversationEngine.persona_command`),
answered ephemerally through the command's `response_url`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import aiohttp
import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack.admins import SlackAdmins
from adapters.slack.files import SlackFiles
from adapters.slack.finaliser import SlackFinaliser
from adapters.slack.middleware import DropIgnoredEvents
from adapters.slack.names import UserNames
from adapters.slack.pacing import EditPacing, WorkspacePacer
from adapters.slack.retry import BudgetedRateLimitRetry
from adapters.slack.sink import (
    NETWORK_ERRORS,
    RETRY_BACKOFF_S,
    SIGNAL_TIMEOUT_S,
    SLACK_MIN_EDIT_INTERVAL_S,
    AssistantStatuses,
    SlackReplySink,
    error_code,
    neutralise_mentions,
)
from adapters.slack.translate import (
    PLATFORM,
    EventCallback,
    SlackEvent,
    SlackIdentity,
    SlashCommand,
    ThreadMessage,
    as_callback,
    command_channel,
    conversation_for,
    files_of,
    in_existing_thread,
    incoming_message,
    is_direct_message,
    mentions,
    model_text,
    reply_target,
    thread_to_seed,
    vote_for,
)
from core.engine import ConversationEngine
from core.errors import PlatformError
from core.rate_budget import RateBudget
from core.supervisor import ReplySupervisor
from core.types import ChatMessage, SeedLoader

log = structlog.get_logger(__name__)

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
SLACK_HTTP_TIMEOUT_S = 30  # one Web API request (each retry is its own); slack-sdk's default
# Connections to Slack per app: aiohttp's default of 100 queued posts behind each other when a few
# hundred replies started at once (make bench, 1,000 concurrent).
SLACK_MAX_CONNECTIONS = 500
SLACK_429_RETRIES = 2  # slack-sdk retries a 429 this often, after its Retry-After, before giving up
SEED_MAX_MESSAGES = 50  # a thread the bot is called into midway: its latest this-many messages seed it
SEED_PAGE_SIZE = 200  # conversations.replies page: the most Slack advises
# conversations.replies pages oldest first, so reaching the latest messages means reading the thread
# through: 10 pages (2,000 messages, 10 Tier 3 calls) reach the mention in all but extraordinary
# threads. A longer one is seeded from its opening message only (see `read_thread_tail`).
SEED_MAX_PAGES = 10
# SIGTERM: replies end by the chat deadline (180 s). The default when the constructor is given none;
# the runner passes SHUTDOWN_GRACE_S (the one shutdown setting) less CLEANUP_GRACE_S.
STOP_GRACE_S = 190.0
# After the grace period, cancelled replies still post their final text and start their working
# signal's clean-up (single calls of at most SIGNAL_TIMEOUT_S): this long is left for those.
CLEANUP_GRACE_S = SIGNAL_TIMEOUT_S + 1.0

# The slash command that shows or changes a channel's persona (declared in deploy/slack-manifest.yaml).
PERSONA_COMMAND = "/lunos"
# Its words that change something, and so need an admin (looked up only for these: `show` and
# `help` cost no users.info call). Validation and wording are core's (`core.personas`).
PERSONA_CHANGES = frozenset({"set", "unset"})
# Slash command answers go to the command's response_url: at most 5 times within 30 minutes of the
# command (https://api.slack.com/interactivity/handling#message_responses), one is enough here. They
# are ephemeral, seen only by whoever typed the command.
RESPONSE_TIMEOUT_S = 10
# A markdown block holds at most 12,000 characters
# (https://docs.slack.dev/reference/block-kit/blocks/markdown-block); command answers are far shorter.
RESPONSE_MAX_CHARS = 12_000

# Workspaces whose pacer is kept. Events of other teams are dropped (`translate.drop_reason`), so an
# app sees its own workspace (and an Enterprise Grid's few); the bound only caps what a bug could grow.
MAX_PACERS = 64

StreamingMode = Literal["edits", "native"]


@dataclass(frozen=True)
class SlackBotConfig:
    """One Slack app's credentials and behaviour (the `[slack]` table, validated)."""

    # Secrets stay out of repr: a config printed in a log line or a traceback must not leak them.
    bot_token: str = field(repr=False)
    signing_secret: str | None = field(default=None, repr=False)  # HTTP mode: verifies every request
    app_token: str | None = field(default=None, repr=False)  # Socket Mode when set
    api_url: str = DEFAULT_SLACK_API_URL
    require_mention: bool = False  # True: thread follow-ups need a mention too
    streaming: StreamingMode = "edits"
    pacing: EditPacing = field(default_factory=EditPacing)
    min_edit_interval_s: float = SLACK_MIN_EDIT_INTERVAL_S
    signal_timeout_s: float = SIGNAL_TIMEOUT_S
    retry_backoff_s: float = RETRY_BACKOFF_S  # a post or final edit Slack refused: first wait before retrying

    def __post_init__(self) -> None:
        if not self.app_token and not self.signing_secret:
            raise ValueError("HTTP mode (no app_token) needs a signing_secret")

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)


class SlackBot:
    """Implements `core.ports.BotRuntime` for one Slack app."""

    def __init__(
        self,
        engine: ConversationEngine,
        config: SlackBotConfig,
        *,
        budget: RateBudget,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        self._engine = engine
        self._config = config
        self._budget = budget
        self._stop_grace_s = stop_grace_s
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._signal_client: AsyncWebClient | None = None
        self._identity: SlackIdentity | None = None
        self._app: AsyncApp | None = None
        self._handler: AsyncSocketModeHandler | None = None
        self._middleware: DropIgnoredEvents | None = None
        self._names: UserNames | None = None
        self._files: SlackFiles | None = None
        self._admins: SlackAdmins | None = None
        self._pacers: dict[str, WorkspacePacer] = {}
        self._statuses = AssistantStatuses()
        # Replies and their working signals' clean-up; HTTP requests inside Bolt are waited for too.
        self._replies = ReplySupervisor.for_bot(engine.profile, PLATFORM)
        self._accepting = False

    @property
    def name(self) -> str:
        return self._engine.profile.name

    @property
    def ready(self) -> bool:
        return self._accepting

    @property
    def events_path(self) -> str:
        return f"/slack/{self.name}/events"

    @property
    def identity(self) -> SlackIdentity:
        if self._identity is None:
            raise RuntimeError(f"slack bot {self.name!r} is not started")
        return self._identity

    @property
    def middleware(self) -> DropIgnoredEvents | None:
        return self._middleware

    def register_routes(self, web_app: web.Application) -> None:
        """HTTP mode: Slack's Events API posts to `/slack/<bot>/events` on the shared server."""
        web_app.router.add_post(self.events_path, self.handle_http)

    async def start(self) -> None:
        if self._session is not None:
            return
        config = self._config
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_HTTP_TIMEOUT_S),
                                              connector=aiohttp.TCPConnector(limit=SLACK_MAX_CONNECTIONS))
        try:
            self._client = AsyncWebClient(
                token=config.bot_token, base_url=config.api_url, session=self._session,
                retry_handlers=[AsyncConnectionErrorRetryHandler(),
                                BudgetedRateLimitRetry(max_retry_count=SLACK_429_RETRIES)],
            )
            self._signal_client = AsyncWebClient(
                token=config.bot_token, base_url=config.api_url, session=self._session, retry_handlers=[],
            )
            self._identity = await self._identify(self._client)
            self._names = UserNames(self._client, turn=self._pacer(self._identity.team_id).lookup_turn)
            profile = self._engine.profile
            self._files = SlackFiles(session=lambda: self._session, client=self._client,
                                     token=config.bot_token, api_url=config.api_url,
                                     max_bytes=profile.attachments.max_file_bytes)
            self._admins = SlackAdmins(self._client, listed=profile.personas.admins,
                                       turn=self._pacer(self._identity.team_id).lookup_turn)
            self._app = self._build_app(self._identity)
            if config.socket_mode:
                self._handler = AsyncSocketModeHandler(self._app, app_token=config.app_token)
                await self._handler.connect_async()  # type: ignore[no-untyped-call]  # untyped in slack-bolt
        except BaseException:
            await self._close_connections()
            raise
        self._accepting = True
        log.info("slack.started", bot=self.name, mode="socket" if config.socket_mode else "http",
                 team=self._identity.team_id, slack_app=self._identity.app_id)

    async def stop(self) -> None:
        """Stop intake, give replies in flight `stop_grace_s` to finish, then cancel the rest (the
        engine finalises a cancelled reply with a note) and disconnect."""
        self._accepting = False  # HTTP mode: 503 from now on, so Slack retries elsewhere
        log.info("slack.intake_closed", bot=self.name)
        if self._handler is not None:  # Socket Mode: first, so no envelope is acked and then dropped
            await self._handler.close_async()  # type: ignore[no-untyped-call]  # untyped in slack-bolt
            self._handler = None
        # An event already inside Bolt when intake stopped (an HTTP request past the 503, a Socket
        # Mode listener running) starts its reply during the grace, and that reply is waited for too.
        # The clean-up the cut-short replies start is single, bounded calls: CLEANUP_GRACE_S.
        await self._replies.drain(finish_s=self._stop_grace_s, total_s=self._stop_grace_s + CLEANUP_GRACE_S)
        await self._close_connections()

    def finaliser(self) -> SlackFinaliser:
        """How the reply journal reaches this app's replies (once started)."""
        if self._client is None:
            raise RuntimeError("start the bot first")
        return SlackFinaliser(self._client)

    async def wait_idle(self) -> None:
        """Until every reply started so far has finished (tests and benchmarks)."""
        await self._replies.wait_idle()

    async def handle_http(self, request: web.Request) -> web.Response:
        """One Events API request, handed to Bolt (signature check, ack) and back."""
        app = self._app
        if app is None or not self._accepting:
            # Not started yet or shutting down: Slack retries, and this or another replica answers.
            return web.json_response({"ok": False, "error": "not_ready"}, status=503)
        # Slack sends UTF-8 JSON objects or forms; anything else (bytes that are not UTF-8, broken
        # JSON, JSON that is not an object such as `null` or `[]`) is refused here with a 400: Bolt
        # would fail parsing it with a 500 and a traceback.
        problem = _malformed_body(await request.read(), request.content_type)
        bolt_request = None
        try:
            if problem is None:
                bolt_request = await to_bolt_request(request)
        except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
            problem = type(exc).__name__
        if bolt_request is None:
            log.warning("slack.bad_request", bot=self.name, error=problem)
            return web.json_response({"ok": False, "error": "invalid_body"}, status=400)
        # Its own task, tracked, so stop() waits for a request that got past the 503 above; shielded
        # so a client hanging up does not cancel an event Bolt may already have acked.
        dispatch = asyncio.create_task(app.async_dispatch(bolt_request), name=f"slack-{self.name}-dispatch")
        self._replies.track(dispatch, cancel_at_drain=False)
        response = await asyncio.shield(dispatch)
        return await to_aiohttp_response(response)

    # -- wiring ----------------------------------------------------------------------------

    async def _identify(self, client: AsyncWebClient) -> SlackIdentity:
        try:
            auth = await client.auth_test()
            bot_id = str(auth["bot_id"])
            info = await client.bots_info(bot=bot_id)
        except SlackApiError as exc:
            raise PlatformError(
                f"slack bot {self.name!r}: Slack refused auth.test/bots.info ({error_code(exc)}); "
                "check bot_token and the users:read scope") from exc
        except NETWORK_ERRORS as exc:
            raise PlatformError(f"slack bot {self.name!r}: Slack API unreachable at "
                                f"{self._config.api_url} ({error_code(exc)})") from exc
        app_id = str((info.get("bot") or {}).get("app_id") or "")
        if not app_id:  # without it every event would be dropped as another app's
            raise PlatformError(f"slack bot {self.name!r}: bots.info did not name the bot's app")
        return SlackIdentity(team_id=str(auth["team_id"]), bot_user_id=str(auth["user_id"]), bot_id=bot_id,
                             app_id=app_id)

    def _build_app(self, identity: SlackIdentity) -> AsyncApp:
        token = self._config.bot_token

        async def authorize(enterprise_id: str | None) -> AuthorizeResult:
            # The identity is known since start(): no auth.test per request (Bolt's default would run
            # one for every request that arrives before its first answer, a burst at start-up).
            return AuthorizeResult(enterprise_id=enterprise_id, team_id=identity.team_id,
                                   bot_user_id=identity.bot_user_id, bot_id=identity.bot_id, bot_token=token)

        # No token on Bolt's client: Bolt gives each request a client with the token from authorize.
        bolt_client = AsyncWebClient(base_url=self._config.api_url, session=self._session, retry_handlers=[])
        app = AsyncApp(
            name=f"lunos-bots.{self.name}", client=bolt_client, authorize=authorize,
            signing_secret=self._config.signing_secret or "",
            # Listeners only start a task, so running them before the ack keeps the ack instant and
            # guarantees the task exists once Slack has its 200 (stop() can then wait for it).
            process_before_response=True,
            # Self-events are dropped by DropIgnoredEvents with every other ignored event, in one place.
            ignoring_self_events_enabled=False,
        )
        self._middleware = DropIgnoredEvents(identity, bot=self.name)
        app.use(self._middleware)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.event("reaction_added")(self._on_reaction)
        app.event("reaction_removed")(self._on_reaction)
        app.command(PERSONA_COMMAND)(self._on_command)
        return app

    async def _close_connections(self) -> None:
        if self._handler is not None:
            await self._handler.close_async()  # type: ignore[no-untyped-call]  # untyped in slack-bolt
            self._handler = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- events ----------------------------------------------------------------------------

    async def _on_mention(self, body: dict[str, Any]) -> None:
        self._spawn(as_callback(body), mentioned=True)

    async def _on_message(self, body: dict[str, Any]) -> None:
        self._spawn(as_callback(body), mentioned=False)

    async def _on_reaction(self, body: dict[str, Any]) -> None:
        # DropIgnoredEvents let only a person's 👍 / 👎 on a message through (translate.drop_reason).
        event = as_callback(body)["event"]
        item = event["item"]
        vote = vote_for(event["reaction"])
        if vote is None or self._session is None:
            return
        added = event.get("type") == "reaction_added"
        # The engine counts a vote only on one of the bot's answers, once per user and answer: a
        # retried event, or 👍 and 👍::skin-tone-2 both added, changes nothing the second time.
        event_id = body.get("event_id")
        self._replies.spawn(self._engine.vote(item["channel"], item["ts"], event["user"], vote, added=added,
                                              event_id=event_id),
                            name=f"slack-{self.name}-vote", event_id=event_id)

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        # Acked at once (Slack allows 3 s); the answer follows through response_url.
        await ack()
        if self._session is None:
            log.warning("slack.command_after_stop", bot=self.name)
            return
        command = cast(SlashCommand, body)
        self._replies.spawn(self._persona_command(command), name=f"slack-{self.name}-command",
                            conversation=str(command_channel(command, self.identity.team_id)))

    async def _persona_command(self, command: SlashCommand) -> None:
        try:
            answer = await self._answer_command(command)
        except Exception:  # the adapter's entry point: the engine's part never raises
            log.exception("slack.command_failed")
            return
        await self._respond(command.get("response_url", ""), answer)

    async def _answer_command(self, command: SlashCommand) -> str:
        """`/lunos` or `/lunos help`: the help text and the persona commands; anything else is a
        persona command for the channel it was typed in."""
        me = self.identity
        if not command.get("channel_id"):
            return f"Use `{PERSONA_COMMAND}` in the channel whose persona you mean."
        text = model_text(command.get("text", ""), me.bot_user_id)
        channel = command_channel(command, me.team_id)
        words = text.split()
        verb = words[0].lower() if words else "help"
        if verb == "help":
            usage = await self._engine.persona_command(channel, "help", admin=False)
            return f"{await self._engine.help_for(channel)}\n\n{usage}"
        admin = False
        if verb in PERSONA_CHANGES and self._admins is not None:
            admin = await self._admins.is_admin(command.get("user_id", ""))
        log.info("slack.persona_command", verb=verb, user=command.get("user_id"), admin=admin)
        return await self._engine.persona_command(channel, text, admin=admin)

    async def _respond(self, response_url: str, text: str) -> None:
        """One ephemeral answer to a slash command, with every mention made inert (a persona's prompt
        may hold `<!channel>`), as Markdown like the bot's replies."""
        if not response_url or self._session is None:
            log.warning("slack.command_unanswered",
                        reason="stopped" if response_url else "no response_url")
            return
        safe = neutralise_mentions(text)[:RESPONSE_MAX_CHARS]
        webhook = AsyncWebhookClient(url=response_url, session=self._session, timeout=RESPONSE_TIMEOUT_S)
        try:
            response = await webhook.send_dict({
                "response_type": "ephemeral", "text": safe,
                "blocks": [{"type": "markdown", "text": safe}],
            })
        except NETWORK_ERRORS as exc:
            log.warning("slack.command_response_failed", error=error_code(exc))
            return
        if response.status_code != 200:
            log.warning("slack.command_response_failed", status=response.status_code,
                        body=response.body[:200])

    def _spawn(self, body: EventCallback, *, mentioned: bool) -> None:
        # No intake check here: HTTP intake is closed by the 503 in handle_http and Socket Mode's by
        # closing the handler, so an event that gets this far is being acked and must be answered
        # (stop() waits for it). Only once the connections are gone is there nothing to answer with.
        if self._session is None:
            log.warning("slack.event_after_stop", bot=self.name, event_id=body.get("event_id"))
            return
        team_id = body.get("team_id") or self.identity.team_id
        self._replies.spawn(self._answer(body, mentioned=mentioned, received_at=time.time()),
                            name=f"slack-{self.name}-{body.get('event_id', '')}",
                            conversation=str(conversation_for(body["event"], team_id)),
                            event_id=body.get("event_id"))

    def _background(self, work: Coroutine[object, object, None]) -> None:
        """Runs a reply's after-work (clearing its working signal) without holding up the turn."""
        self._replies.spawn(work, name=f"slack-{self.name}-cleanup")

    async def _answer(self, body: EventCallback, *, mentioned: bool, received_at: float) -> None:
        try:
            await self._answer_event(body, mentioned=mentioned, received_at=received_at)
        except Exception:  # the adapter's entry point: log; the engine already told the user
            log.exception("slack.event_failed")

    async def _answer_event(self, body: EventCallback, *, mentioned: bool, received_at: float) -> None:
        me = self.identity
        event = body["event"]
        team_id = body.get("team_id") or me.team_id
        dm = is_direct_message(event)
        asked = dm or mentioned
        files = files_of(event)
        if not asked and not files and not model_text(event.get("text", ""), me.bot_user_id):
            return  # nothing to answer: neither words nor files
        if not await self._addressed_to_me(event, team_id, mentioned=mentioned):
            return
        assert self._client is not None and self._signal_client is not None and self._names is not None
        assert self._files is not None
        user = event["user"]
        # Only the cache here: a users.info call now would hold up the working signal. On a cold
        # cache the engine resolves the name after the signal is up (the id stands in if that fails).
        known = None if dm else self._names.cached(user)
        seed = self._seed_loader(event) if in_existing_thread(event) else None
        names = self._names

        async def resolve_author() -> str:
            return await names.name(user)

        # A bare mention has no text: core reads it as `help`. A file sent without a word is a
        # question about the file; it is downloaded only if the engine reads it, after the signal.
        message = incoming_message(self.name, body, me, author_name=known or user, seed=seed,
                                   received_at=received_at,
                                   resolve_author=resolve_author if not dm and known is None else None,
                                   attachments=self._files.attachments(files))
        sink = SlackReplySink(
            reply_target(event, team_id), client=self._client, signal_client=self._signal_client,
            pacer=self._pacer(team_id), native=self._config.streaming == "native",
            min_edit_interval_s=self._config.min_edit_interval_s, statuses=self._statuses,
            background=self._background, signal_timeout_s=self._config.signal_timeout_s,
            retry_backoff_s=self._config.retry_backoff_s,
        )
        await self._engine.handle(message, sink)

    async def _addressed_to_me(self, event: SlackEvent, team_id: str, *, mentioned: bool) -> bool:
        """DMs come as `message` events only; channel mentions as `app_mention` (their `message` twin
        is skipped so a message is answered once); other thread messages only in threads I talk in."""
        if is_direct_message(event):
            return not mentioned
        if mentioned:
            return True
        if mentions(event.get("text", ""), self.identity.bot_user_id):
            # Answered by its app_mention twin — except that Slack may send a mention that shares
            # files only as `message`/`file_share`, with no app_mention (slackapi/bolt-python#925).
            # Both twins carry the same message identity, so the engine answers it once either way.
            return event.get("subtype") == "file_share" and bool(files_of(event))
        if self._config.require_mention or not in_existing_thread(event):
            return False
        return await self._engine.has_history(conversation_for(event, team_id))

    def _pacer(self, team_id: str) -> WorkspacePacer:
        pacer = self._pacers.pop(team_id, None)
        if pacer is None:
            pacer = WorkspacePacer(self._budget, self._config.pacing, app_id=self.identity.app_id,
                                   team_id=team_id)
        self._pacers[team_id] = pacer  # most recently used last
        while len(self._pacers) > MAX_PACERS:  # a pacer holds no state of its own: Redis has it
            del self._pacers[next(iter(self._pacers))]
        return pacer

    def _seed_loader(self, event: SlackEvent) -> SeedLoader:
        """Reads the thread the bot was called into (bounded), once, when it has no history for it.
        The engine calls it under the conversation lock, after the working signal is up."""
        channel, thread_ts, before = event["channel"], event["thread_ts"], event["ts"]

        async def load() -> Sequence[ChatMessage]:
            assert self._client is not None and self._names is not None
            messages = await read_thread_tail(self._client, channel, thread_ts, before_ts=before,
                                              keep=SEED_MAX_MESSAGES)
            me = self.identity
            people = [m["user"] for m in messages
                      if m.get("user") and m.get("user") != me.bot_user_id and not m.get("bot_id")]
            names = await self._names.names(people)
            return thread_to_seed(messages, me, before_ts=before, names=names, limit=SEED_MAX_MESSAGES)

        return load


async def read_thread_tail(
    client: AsyncWebClient, channel: str, thread_ts: str, *, before_ts: str, keep: int,
) -> list[ThreadMessage]:
    """The latest `keep` messages of a thread before `before_ts`, oldest first.

    `conversations.replies` pages from the thread's start, so the thread is read forward (up to
    `before_ts`: `latest`, not inclusive), keeping only the newest `keep` messages seen. When the
    parent's `reply_count` shows the thread cannot be read through in `SEED_MAX_PAGES` pages, or
    the pages run out first, only the opening message is returned: what the thread is about, rather
    than an old stretch from its middle passed off as the latest.
    """
    window: deque[ThreadMessage] = deque(maxlen=keep)
    cursor: str | None = None
    reachable = SEED_PAGE_SIZE * SEED_MAX_PAGES
    opening: ThreadMessage | None = None
    try:
        for _ in range(SEED_MAX_PAGES):
            response = await client.conversations_replies(
                channel=channel, ts=thread_ts, latest=before_ts, inclusive=False, limit=SEED_PAGE_SIZE,
                cursor=cursor,
            )
            page: list[ThreadMessage] = response.get("messages") or []
            if opening is None and page:
                opening = page[0]
                if int(opening.get("reply_count") or 0) >= reachable:
                    log.warning("slack.seed_thread_too_long", replies=opening.get("reply_count"))
                    return [opening]
            window.extend(page)
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not response.get("has_more") or not cursor:
                return list(window)
    except (SlackApiError, *NETWORK_ERRORS) as exc:
        raise PlatformError(f"conversations.replies: {error_code(exc)}") from exc
    log.warning("slack.seed_thread_too_long", pages=SEED_MAX_PAGES)
    return [opening] if opening is not None else []


def _malformed_body(raw: bytes, content_type: str) -> str | None:
    """Why a JSON body cannot be an Events API request (not JSON, not an object, or an `event` that
    is not an object), or None. Form bodies are Bolt's to parse."""
    if content_type != "application/json" and not raw.lstrip().startswith(b"{"):
        return None
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError:  # includes bytes that are not UTF-8
        return "not JSON"
    if not isinstance(parsed, dict):
        return "not a JSON object"
    if "event" in parsed and not isinstance(parsed["event"], dict):
        return "event is not an object"
    return None
