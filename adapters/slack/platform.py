"""The Slack platform as the composition root sees it: `SLACK`, its `PlatformSpec`.

Validates a definition's `[slack]` table into a `SlackBotConfig` (each error names the file and
`slack.<field>`), builds a `SlackBot` that shares the process's Redis rate budget and registers its
HTTP-mode route on the shared server, and proves a bot's tokens for `lunos-bots check`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.bot import CLEANUP_GRACE_S, DEFAULT_SLACK_API_URL, SlackBot, SlackBotConfig
from adapters.slack.calls import SlackCallCounter
from adapters.slack.pacing import SLACK_TIER3_PER_MINUTE, EditPacing
from adapters.slack.sink import NETWORK_ERRORS, error_code
from adapters.slack.socket_mode import PROBE_TIMEOUT_S, open_socket_url
from adapters.slack.translate import PLATFORM
from core.errors import DefinitionError, PlatformError, Problems
from core.platform import CheckLine, PlatformSetting, PlatformSpec, ProbeContext, RuntimeContext, TableContext
from core.ports import BotRuntime, PlatformCallObserver
from core.rate_budget import RateBudget

API_URL_SETTING = "SLACK_API_URL"
SLACK_FIELDS = frozenset({"bot_token", "signing_secret", "app_token", "require_mention", "streaming",
                          "edits_per_minute"})
STREAMING_MODES = ("edits", "native")


def with_trailing_slash(url: str) -> str:
    """slack-sdk joins the method name straight onto its base URL: `…/api` + `chat.postMessage`
    would call `…/apichat.postMessage`."""
    return url if url.endswith("/") else url + "/"


def slack_config(context: TableContext) -> SlackBotConfig:
    """The `[slack]` table, checked. Raises `DefinitionError` naming the file and `slack.<field>`
    (an `InvalidDefinition` listing each when there are several mistakes)."""
    file, table = context.file, context.table
    problems = Problems()
    for key in sorted(set(table) - SLACK_FIELDS):
        problems.add(DefinitionError(file, f"slack.{key}",
                                     f"unknown field; expected one of {sorted(SLACK_FIELDS)}"))
    invalid: str | None = ""  # a value that is wrong, already reported: not also "missing"
    bot_token = problems.attempt(lambda: _token(file, table, "bot_token", "xoxb-"), invalid)
    if bot_token is None:
        problems.add(DefinitionError(file, "slack.bot_token", "is required (a bot token starting xoxb-…)"))
    app_token = problems.attempt(lambda: _token(file, table, "app_token", "xapp-"), invalid)
    signing_secret = problems.attempt(lambda: _optional_str(file, table, "signing_secret"), invalid)
    if app_token is None and signing_secret is None:
        problems.add(DefinitionError(file, "slack.signing_secret",
                                     "required in HTTP mode (set app_token instead for Socket Mode)"))
    require_mention = table.get("require_mention", False)
    if not isinstance(require_mention, bool):
        problems.add(DefinitionError(file, "slack.require_mention",
                                     f"expected true or false, got {require_mention!r}"))
    streaming = table.get("streaming", "edits")
    if streaming not in STREAMING_MODES:
        problems.add(DefinitionError(file, "slack.streaming",
                                     f"expected one of {STREAMING_MODES}, got {streaming!r}"))
    per_minute = table.get("edits_per_minute", SLACK_TIER3_PER_MINUTE)
    if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 2:
        problems.add(DefinitionError(file, "slack.edits_per_minute",
                                     f"expected an integer of at least 2, got {per_minute!r}"))
    problems.raise_if_any()
    assert bot_token  # for mypy: a missing one was recorded above
    api_url = context.settings.get(API_URL_SETTING) or DEFAULT_SLACK_API_URL
    return SlackBotConfig(
        bot_token=bot_token, signing_secret=signing_secret, app_token=app_token, api_url=api_url,
        require_mention=bool(require_mention), streaming=streaming,
        pacing=EditPacing(per_window=per_minute),
    )


class ProvenSlackBot(SlackBot):
    """A `SlackBot` whose Socket Mode start proves the app token first.

    slack-sdk retries a refused `apps.connections.open` forever (a traceback every ~10 s, and a start
    that never returns); one call of our own turns it into a start failure naming the token, which
    the runner reports and retries with backoff like any other.

    With `calls`, every Web API call of its clients is counted by method (`SlackCallCounter`)."""

    def __init__(self, *args: Any, calls: PlatformCallObserver | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._calls = calls

    async def start(self) -> None:
        config = self.config
        if config.app_token:
            await open_socket_url(config.api_url, config.app_token, bot=self.name)
        await super().start()
        if self._calls is not None:
            counter = SlackCallCounter(self._calls, self.name)
            for client in (self._client, self._signal_client):
                if client is not None and counter not in client.retry_handlers:
                    client.retry_handlers.insert(0, counter)  # first: it sees every response

    @property
    def config(self) -> SlackBotConfig:
        return self._config


async def probe_slack(config: SlackBotConfig, *, bot: str) -> list[str]:
    """What `check` says about one Slack bot's credentials, as `run` would use them: `auth.test`
    with the bot token and, in Socket Mode, `apps.connections.open` with the app token. Returns
    the problems found (empty when both are accepted)."""
    problems: list[str] = []
    client = AsyncWebClient(token=config.bot_token, base_url=config.api_url, timeout=PROBE_TIMEOUT_S,
                            retry_handlers=[])
    try:
        await client.auth_test()
    except SlackApiError as exc:
        problems.append(f"bot_token rejected by auth.test ({error_code(exc)}); check [slack].bot_token")
    except NETWORK_ERRORS as exc:
        problems.append(f"Slack API unreachable at {config.api_url} ({error_code(exc)}); "
                        f"check {API_URL_SETTING}")
        return problems
    if config.app_token:
        try:
            await open_socket_url(config.api_url, config.app_token, bot=bot)
        except PlatformError as exc:
            problems.append(str(exc).removeprefix(f"slack bot {bot!r}: "))
    return problems


async def check_slack(config: SlackBotConfig, context: ProbeContext) -> list[CheckLine]:
    """`check`'s lines for one Slack bot: one per problem, or one saying which calls accepted it."""
    try:
        problems = await asyncio.wait_for(probe_slack(config, bot=context.bot), context.timeout_s)
    except TimeoutError:
        problems = [f"Slack did not answer within {context.timeout_s:g} s; check {API_URL_SETTING}"]
    if problems:
        return [CheckLine(False, problem) for problem in problems]
    proved = "auth.test" + (" and apps.connections.open (Socket Mode)" if config.app_token else "")
    return [CheckLine(True, f"Slack accepted the tokens ({proved})")]


def slack_stop_grace_s(shutdown_grace_s: float) -> float:
    """How long a Slack bot lets replies finish at SIGTERM, so that the clean-up after it still ends
    within SHUTDOWN_GRACE_S."""
    return max(0.0, shutdown_grace_s - CLEANUP_GRACE_S)


def build_slack_bot(context: RuntimeContext, config: SlackBotConfig) -> BotRuntime:
    """A `SlackBot` on the process's shared rate budget; in HTTP mode its events route is added to
    the shared server. Its stop fits SHUTDOWN_GRACE_S."""
    budget = RateBudget(context.redis, context.keys, circuit=context.circuit)
    bot = ProvenSlackBot(context.engine, config, budget=budget,
                         stop_grace_s=slack_stop_grace_s(context.shutdown_grace_s), calls=context.calls)
    if not config.socket_mode:
        context.add_route("POST", bot.events_path, bot.handle_http)
    return bot


def _optional_str(file: str, table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DefinitionError(file, f"slack.{key}", f"expected a string, got {type(value).__name__}")
    return value.strip() or None


def _token(file: str, table: Mapping[str, Any], key: str, prefix: str) -> str | None:
    value = _optional_str(file, table, key)
    if value is None:
        return None
    if not value.startswith(prefix):
        raise DefinitionError(file, f"slack.{key}", f"expected a token starting {prefix}…")
    return value


SLACK: PlatformSpec[SlackBotConfig] = PlatformSpec(
    name=PLATFORM,
    configure=slack_config,
    build=build_slack_bot,
    credential_fields=("bot_token", "signing_secret", "app_token"),
    required_credentials=("bot_token",),
    settings=(PlatformSetting(API_URL_SETTING, DEFAULT_SLACK_API_URL, with_trailing_slash),),
    probe=check_slack,
)
