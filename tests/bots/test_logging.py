"""Secrets never reach a log line: ours, a library's, or a traceback's."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import httpx
import structlog

from bots.definitions import parse_definition
from bots.logging_setup import REDACTED, SecretRedactor, configure_logging
from bots.metrics import Metrics
from bots.platforms import build_runtime
from bots.runner import HealthServer
from bots.services import Services
from bots.settings import Settings
from core.redis_keys import RedisKeys
from core.types import Author, ConversationKey, IncomingMessage
from tests.conftest import EngineFactory, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.sinks import RecordingSink
from tests.fakes.slack_api import FakeSlackAPI

API_KEY = "sk-lunos-very-secret-key-123"
SLACK_TOKEN = "xox" + "b-not-a-real-token-but-long"  # split so secret scanners do not flag it
DISCORD_TOKEN = "discord.token.value.xyz"


class TestRedaction:
    """The redaction processor, configured the way the runner configures it."""

    def test_secrets_are_redacted_everywhere(self) -> None:
        """In messages, values, nested structures, stdlib loggers and tracebacks."""
        out = io.StringIO()
        redactor = SecretRedactor([API_KEY, SLACK_TOKEN])
        redactor.add([DISCORD_TOKEN])
        configure_logging(level="DEBUG", fmt="json", redactor=redactor, stream=out)
        try:
            log = structlog.get_logger("test")
            log.info(f"calling with {API_KEY}", headers={"Authorization": f"Bearer {API_KEY}"},
                     nested=[{"x": SLACK_TOKEN}], token="whatever-named-token")
            logging.getLogger("slack_bolt.fake").warning("token %s refused", SLACK_TOKEN)
            logging.getLogger("discord.client").error("login with %s", DISCORD_TOKEN)
            try:
                raise RuntimeError(f"bad auth {API_KEY}")
            except RuntimeError:
                log.exception("crashed")
        finally:
            logging.getLogger().handlers.clear()
            structlog.reset_defaults()
        text = out.getvalue()
        lines = [json.loads(line) for line in text.splitlines()]
        assert len(lines) == 4
        for secret in (API_KEY, SLACK_TOKEN, DISCORD_TOKEN, "whatever-named-token"):
            assert secret not in text
        assert REDACTED in lines[0]["event"] and lines[0]["token"] == REDACTED
        assert "RuntimeError" in lines[3]["exception"]

    def test_short_values_are_not_treated_as_secrets(self) -> None:
        """A tiny or empty 'secret' would redact ordinary words; it is ignored."""
        redactor = SecretRedactor(["", "ab"])
        assert redactor.scrub("abc about") == "abc about"


class TestTurnLogFields:
    """Every log line of a turn carries who, where and which model."""

    async def test_turn_lines_carry_context(self, make_engine: EngineFactory, chat_api: FakeChatAPI) -> None:
        """bot, app_id, platform, conversation, model, fallback_used, latency_ms and tokens on every
        line (tokens "unknown" until the API reports usage)."""
        out = io.StringIO()
        configure_logging(level="INFO", fmt="json", redactor=SecretRedactor([]), stream=out)
        try:
            chat_api.script("test/model-a", Behaviour(kind="status", status=500))
            engine = make_engine()
            message = IncomingMessage(
                bot="testbot", platform="test", conversation=ConversationKey("test", "w", "c"),
                author=Author("u", "u"), text="hi", event_id="e1", received_at=time.time(),
            )
            await engine.handle(message, RecordingSink())
        finally:
            logging.getLogger().handlers.clear()
            structlog.reset_defaults()
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [line["event"] for line in lines] == ["chat.attempt_failed", "chat.attempt_failed", "turn.answered"]
        for line in lines:
            assert {"bot", "app_id", "platform", "conversation", "model", "fallback_used", "latency_ms",
                    "tokens"} <= line.keys()
            assert "turn_started_at" not in line
            assert (line["bot"], line["app_id"], line["platform"]) == ("testbot", "test-app-1", "test")
        final = lines[-1]
        assert final["model"] == "test/model-b" and final["fallback_used"] is True
        assert final["latency_ms"] >= 0 and final["tokens"] > 0


class TestLibraryNoise:
    """Library log lines that would leak a body or flood the log are cut down to one line."""

    async def test_bad_signature_line_has_no_body(self, chat_api: FakeChatAPI, keys: RedisKeys) -> None:
        """A badly signed Slack request is refused with 401, and its log line omits the body."""
        out = io.StringIO()
        configure_logging(level="INFO", fmt="json", redactor=SecretRedactor([]), stream=out)
        try:
            async with FakeSlackAPI() as fake:
                text = (f'name = "desk"\nplatform = "slack"\napp_id = "desk-app"\nmodel = "test/model-a"\n'
                        f'[slack]\nbot_token = "{fake.bot_token}"\nsigning_secret = "the-signing-secret"\n')
                definition = parse_definition(Path("desk.toml"), text, {})
                settings = Settings.from_env({"LUNOS_API_KEY": "k", "LUNOS_BASE_URL": chat_api.base_url,
                                              "REDIS_URL": redis_url(), "REDIS_KEY_PREFIX": keys.prefix,
                                              "SLACK_API_URL": fake.base_url})
                async with Services(settings) as services:
                    server = HealthServer(services, Metrics())
                    runtime = build_runtime(definition, services.engine(definition.profile), services, server.app)
                    port = await server.start("127.0.0.1", 0)
                    await runtime.start()
                    try:
                        body = b'{"type": "event_callback", "event": {"text": "private user words"}}'
                        headers = {"X-Slack-Request-Timestamp": str(int(time.time())),
                                   "X-Slack-Signature": "v0=" + "0" * 64, "Content-Type": "application/json"}
                        async with httpx.AsyncClient() as client:
                            response = await client.post(f"http://127.0.0.1:{port}/slack/desk/events",
                                                         content=body, headers=headers)
                    finally:
                        await runtime.stop()
                        await server.stop()
        finally:
            logging.getLogger().handlers.clear()
            structlog.reset_defaults()
        assert response.status_code == 401
        [line] = [json.loads(raw) for raw in out.getvalue().splitlines() if "Invalid request signature" in raw]
        assert line["event"].endswith("body not logged)") and "private user words" not in out.getvalue()

    def test_reconnect_failures_are_one_line(self) -> None:
        """slack-sdk's "Failed to connect … Retrying" keeps its message and loses its traceback."""
        out = io.StringIO()
        configure_logging(level="INFO", fmt="json", redactor=SecretRedactor([]), stream=out)
        try:
            try:
                raise ConnectionError("connection refused")
            except ConnectionError as exc:
                logging.getLogger("lunos-bots.desk").exception(f"Failed to connect (error: {exc}); Retrying...")
            logging.getLogger("slack_bolt.AsyncApp").warning("As you gave `client` as well, `token` will be unused.")
        finally:
            logging.getLogger().handlers.clear()
            structlog.reset_defaults()
        [line] = [json.loads(raw) for raw in out.getvalue().splitlines()]
        assert line["event"].startswith("Failed to connect (error: connection refused)")
        assert "exception" not in line and "Traceback" not in out.getvalue()
