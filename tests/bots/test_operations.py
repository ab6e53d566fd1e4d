"""Operations: `usage --json` against what the chat API reported, [limits] in definitions, the
metrics a run exports (and the Grafana dashboard that charts them), one shutdown budget."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from adapters.discord.bot import CLOSE_TIMEOUT_S
from adapters.discord.calls import discord_route
from adapters.discord.platform import discord_stop_grace_s
from adapters.slack import SlackBot
from adapters.slack.bot import CLEANUP_GRACE_S
from adapters.slack.platform import slack_stop_grace_s
from bots.definitions import parse_definition
from bots.instrumentation import InstrumentedEngine
from bots.metrics import EXPORTED, Metrics
from bots.platforms import build_runtime
from bots.redis_connection import parse_redis_url
from bots.runner import HealthServer
from bots.services import Services
from bots.settings import DEFAULT_SHUTDOWN_GRACE_S, Settings, SettingsError
from core.errors import DefinitionError, InvalidDefinition
from core.feedback import Vote
from core.limits import TurnLimits
from core.redis_keys import RedisKeys
from core.types import Author, ConversationKey, IncomingMessage
from tests.conftest import TEST_API_KEY, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI, _usage
from tests.fakes.sinks import RecordingSink
from tests.fakes.slack_api import FakeSlackAPI, app_mention_event, signed_headers

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "lunos-bots.json"
CHART = ROOT / "deploy" / "helm" / "lunos-bots"
A, B = "test/model-a", "test/model-b"
SLACK_BOT = """
name = "ops"
platform = "slack"
app_id = "lunos-ops"
model = "test/model-a"
fallback_models = ["test/model-b"]
[slack]
bot_token = "xoxb-1"
signing_secret = "s"
"""

SECRET = "helpdesk-signing-secret"
HELPDESK = """
name = "helpdesk"
platform = "slack"
app_id = "lunos-helpdesk"
model = "test/model-a"

[slack]
bot_token = "${SLACK_BOT_TOKEN}"
signing_secret = "${SLACK_SIGNING_SECRET}"
"""


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    value = f"lbtest-ops-{uuid.uuid4().hex[:10]}"
    yield value
    async for key in redis.scan_iter(match=f"{value}:*"):
        await redis.delete(key)


def message(text: str, user: str = "u1") -> IncomingMessage:
    return IncomingMessage(
        bot="ops", platform="slack", conversation=ConversationKey("slack", "T1", uuid.uuid4().hex),
        author=Author(user, user), text=text, event_id=uuid.uuid4().hex,
        received_at=time.time(),
    )


def settings_for(chat_api: FakeChatAPI, prefix: str) -> Settings:
    return Settings.from_env({"LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url,
                              "REDIS_URL": redis_url(), "REDIS_KEY_PREFIX": prefix,
                              "LUNOS_FIRST_TOKEN_TIMEOUT_S": "2", "LUNOS_TOTAL_TIMEOUT_S": "10"})


async def usage_json(prefix: str, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNOS_", "SLACK_", "DISCORD_"))}
    env.update({"REDIS_URL": redis_url(), "REDIS_KEY_PREFIX": prefix, "LOG_FORMAT": "json"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "usage", "--json", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    document: dict[str, Any] = json.loads(out)
    return document


class TestUsageJson:
    """`usage --json` is one document whose totals are what the chat API reported."""

    async def test_totals_equal_the_reported_usage(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """Answers, a fallback, a failure and a refusal: per-model rows, refusals by limit, and token
        totals equal to the sum of the fake API's `usage` chunks; the same tokens reach /metrics."""
        chat_api.script(A, Behaviour(text="first answer, fairly short"), Behaviour(text="second answer " * 9),
                        Behaviour(kind="status", status=500), Behaviour(kind="status", status=500),
                        Behaviour(kind="status", status=500))
        chat_api.script(B, Behaviour(text="the fallback answered this one"), Behaviour(kind="status", status=503))
        definition = parse_definition(Path("ops.toml"), SLACK_BOT, {})
        metrics = Metrics()
        async with Services(settings_for(chat_api, prefix)) as services:
            engine = services.engine(definition.profile, observer=metrics,
                                     limits=TurnLimits(max_input_chars=50), on_refusal=metrics.limit_refused,
                                     engine_type=partial(InstrumentedEngine, metrics=metrics))
            statuses = [(await engine.handle(message(text), RecordingSink())).status
                        for text in ("hello", "tell me more", "and now?", "x" * 51, "last one")]
        assert statuses == ["answered", "answered", "answered", "refused", "failed"]
        reported = [_usage(r.body, r.behaviour.text or "") for r in chat_api.requests
                    if r.status == 200 and r.behaviour is not None and r.behaviour.kind == "stream"]
        assert len(reported) == 3

        document = await usage_json(prefix, "--app-id", "lunos-ops", "--days", "1")
        totals = document["totals"]
        assert totals["prompt_tokens"] == sum(u["prompt_tokens"] for u in reported)
        assert totals["completion_tokens"] == sum(u["completion_tokens"] for u in reported)
        assert totals["total_tokens"] == sum(u["total_tokens"] for u in reported)
        assert totals["requests"] == 3 and totals["fallbacks"] == 1 and totals["failures"] == 1
        assert totals["refusals"] == {"max_input_chars": 1}
        assert document["apps"]["lunos-ops"] == totals and document["days"] == 1
        rows = {r["model"]: r for r in document["rows"]}
        assert set(rows) == {A, B}
        assert rows[B]["requests"] == 1 and rows[B]["fallbacks"] == 1
        assert rows[A]["requests"] == 2 and rows[A]["failures"] == 1
        assert set(document["rows"][0]) == {"app_id", "day", "model", "requests", "prompt_tokens",
                                            "completion_tokens", "total_tokens", "usage_unknown", "fallbacks",
                                            "failures", "refusals", "feedback_up", "feedback_down",
                                            "bot"}

        text = metrics.render().decode()
        prompt = sum(float(v) for v in re.findall(r'lunos_tokens_total\{app_id="lunos-ops",kind="prompt",'
                                                  r'model="[^"]+"\} (\S+)', text))
        assert prompt == totals["prompt_tokens"]
        assert f'lunos_fallbacks_total{{bot="ops",from_model="{A}",to_model="{B}"}} 1.0' in text
        assert 'lunos_chat_api_errors_total{bot="ops",model="test/model-a",status="500"}' in text
        assert 'lunos_chat_api_errors_total{bot="ops",model="test/model-b",status="503"} 2.0' in text
        assert 'lunos_limit_refusals_total{bot="ops",limit="max_input_chars"} 1.0' in text
        assert 'lunos_turns_total{bot="ops",status="refused"} 1.0' in text
        assert 'lunos_time_to_first_token_seconds_count{bot="ops"} 3.0' in text
        assert 'lunos_added_latency_seconds_count{bot="ops"} 3.0' in text
        assert 'lunos_final_text_lag_seconds_count{bot="ops"} 3.0' in text
        assert 'lunos_replies_in_flight{bot="ops"} 0.0' in text


class TestFeedback:
    """👍 / 👎 reach `usage --json` beside the tokens, and /metrics."""

    async def test_votes_in_usage_json_and_metrics(self, chat_api: FakeChatAPI, prefix: str) -> None:
        definition = parse_definition(Path("ops.toml"), SLACK_BOT, {})
        metrics = Metrics()
        async with Services(settings_for(chat_api, prefix)) as services:
            engine = services.engine(definition.profile, observer=metrics, on_vote=metrics.feedback_vote)
            sink = RecordingSink()
            question = message("hello")
            assert (await engine.handle(question, sink)).status == "answered"
            (answer,) = sink.messages
            channel = question.conversation.channel
            assert await engine.vote(channel, answer, "u2", Vote.UP, added=True) == "recorded"
            assert await engine.vote(channel, answer, "u3", Vote.UP, added=True) == "recorded"
            assert await engine.vote(channel, answer, "u4", Vote.DOWN, added=True) == "recorded"
            assert await engine.vote(channel, answer, "u3", Vote.UP, added=False) == "removed"
        document = await usage_json(prefix, "--app-id", "lunos-ops", "--days", "1")
        (row,) = document["rows"]
        assert (row["model"], row["feedback_up"], row["feedback_down"]) == (A, 1, 1)
        assert (document["totals"]["feedback_up"], document["totals"]["feedback_down"]) == (1, 1)
        text = metrics.render().decode()
        votes = 'lunos_feedback_votes_total{app_id="lunos-ops",change="%s",model="%s",vote="%s"} %s'
        assert votes % ("added", A, "up", "2.0") in text
        assert votes % ("removed", A, "up", "1.0") in text
        assert votes % ("added", A, "down", "1.0") in text


class TestLimitsTable:
    """The `[limits]` table of a definition."""

    def test_defaults_hold_without_the_table(self) -> None:
        """A Slack or Discord bot without [limits] gets the defaults; the console bot none."""
        definition = parse_definition(Path("ops.toml"), SLACK_BOT, {})
        assert definition.limits == TurnLimits(user_turns_in_flight=2, user_turns_per_minute=10,
                                               max_input_chars=8000, daily_tokens=0)
        console = parse_definition(ROOT / "bots" / "console.toml", (ROOT / "bots" / "console.toml").read_text(), {})
        assert console.limits is None

    def test_values_override_defaults(self) -> None:
        """Set fields override; unset ones keep their defaults; 0 switches a limit off."""
        text = SLACK_BOT.replace("[slack]", "[limits]\nuser_turns_per_minute = 0\ndaily_tokens = 500000\n[slack]")
        limits = parse_definition(Path("ops.toml"), text, {}).limits
        assert limits == TurnLimits(user_turns_per_minute=0, daily_tokens=500000)

    def test_every_mistake_is_named(self) -> None:
        """Unknown fields and bad values each name `limits.<field>`; a console bot may not have the table."""
        text = SLACK_BOT.replace("[slack]", '[limits]\nuser_turns_in_flight = -1\nmax_input_chars = "8k"\n'
                                            "burst = 3\n[slack]")
        with pytest.raises(InvalidDefinition) as caught:
            parse_definition(Path("ops.toml"), text, {})
        fields = sorted(e.field for e in caught.value.errors)
        assert fields == ["limits.burst", "limits.max_input_chars", "limits.user_turns_in_flight"]
        console = (ROOT / "bots" / "console.toml").read_text() + "\n[limits]\nmax_input_chars = 10\n"
        with pytest.raises(DefinitionError, match="no limits"):
            parse_definition(Path("console.toml"), console, {})


class TestDashboard:
    """deploy/grafana/lunos-bots.json charts what /metrics exports."""

    def test_every_panel_queries_an_exported_metric(self) -> None:
        """Each panel has at least one query, and every lunos_* name in a query is exported (histogram
        series by their _bucket/_count/_sum names)."""
        dashboard = json.loads(DASHBOARD.read_text())
        panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
        assert len(panels) >= 8
        series = set(EXPORTED) | {f"{m}{s}" for m in EXPORTED if m.endswith("_seconds")
                                   for s in ("_bucket", "_count", "_sum")}
        for panel in panels:
            queries = [t["expr"] for t in panel.get("targets", [])]
            assert queries, panel["title"]
            for query in queries:
                names = set(re.findall(r"\blunos_[a-z_]+", query))
                assert names and names <= series, (panel["title"], names - series)

    def test_the_dashboard_covers_the_issue(self) -> None:
        """Latency, errors, fallbacks, tokens per app ID and replies in flight each have a panel."""
        text = DASHBOARD.read_text()
        for metric in ("lunos_added_latency_seconds_bucket", "lunos_chat_api_errors_total", "lunos_fallbacks_total",
                       "lunos_tokens_total", "lunos_replies_in_flight"):
            assert metric in text

    async def test_every_exported_name_is_real(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """`EXPORTED` lists exactly the families a registry renders (so the dashboard check means something)."""
        metrics = Metrics()
        async with Services(settings_for(chat_api, prefix)) as services:
            metrics.watch_redis(services.circuit)
            families = {m.name + ("_total" if m.type == "counter" else "") for m in metrics.registry.collect()}
        assert families == set(EXPORTED)


class TestPlatformRoutes:
    """Platform calls are labelled by method with the ids taken out (bounded label values)."""

    def test_discord_route(self) -> None:
        """Snowflakes become {id}; the API prefix is dropped."""
        assert discord_route("patch", "/api/v10/channels/123456789012/messages/987654321098") == \
            "PATCH /channels/{id}/messages/{id}"


class TestShutdownBudget:
    """SHUTDOWN_GRACE_S governs every adapter's drain and the chart's grace period."""

    def test_adapters_drain_within_the_one_setting(self) -> None:
        """Slack's wait plus its clean-up and Discord's grace plus its finalising fit SHUTDOWN_GRACE_S."""
        for grace in (DEFAULT_SHUTDOWN_GRACE_S, 30.0, 8.0):
            assert slack_stop_grace_s(grace) + CLEANUP_GRACE_S <= grace
            # Discord: replies finish within their share; finalising the rest (≥ CLOSE_TIMEOUT_S) follows.
            assert 0 < discord_stop_grace_s(grace) <= grace - CLOSE_TIMEOUT_S
        settings = Settings.from_env({"SHUTDOWN_GRACE_S": "45"})
        assert settings.shutdown_grace_s == 45.0

    def test_the_chart_derives_its_grace_period(self) -> None:
        """The pod's terminationGracePeriodSeconds is computed from shutdownGraceSeconds, which also
        sets SHUTDOWN_GRACE_S; nothing else in the chart names a grace period."""
        values = (CHART / "values.yaml").read_text()
        assert re.search(rf"^shutdownGraceSeconds: {int(DEFAULT_SHUTDOWN_GRACE_S)}\b", values, re.M)
        assert "terminationGracePeriodSeconds:" not in values
        helpers = (CHART / "templates" / "_helpers.tpl").read_text()
        assert "terminationGracePeriodSeconds: {{ include \"lunos-bots.terminationGrace\" . }}" in helpers
        assert re.search(r"add .*\.Values\.shutdownGraceSeconds", helpers)
        assert re.search(r"name: SHUTDOWN_GRACE_S\s+value: \{\{ \.Values\.shutdownGraceSeconds \| quote \}\}",
                         helpers)

    def test_the_chart_probes_liveness_and_readiness_apart(self) -> None:
        """Liveness probes /healthz, readiness /readyz."""
        helpers = (CHART / "templates" / "_helpers.tpl").read_text()
        live = helpers[helpers.index("livenessProbe:"):][:200]
        ready = helpers[helpers.index("readinessProbe:"):][:200]
        assert "path: /healthz" in live and "path: /readyz" in ready


class TestRefusalOnSlack:
    """A limit refusal as a Slack user sees it, through the real adapter and the runner's wiring."""

    async def test_too_long_a_mention_is_answered_in_its_thread(self, chat_api: FakeChatAPI, keys: RedisKeys) -> None:
        """A mention over max_input_chars: one reply in the thread naming the limit, no 👀 reaction,
        no model call, and the refusal counted in /metrics."""
        text = HELPDESK.replace("[slack]", "[limits]\nmax_input_chars = 20\n[slack]")
        async with FakeSlackAPI() as fake:
            definition = parse_definition(Path("helpdesk.toml"), text, {
                "SLACK_BOT_TOKEN": fake.bot_token, "SLACK_SIGNING_SECRET": SECRET})
            settings = Settings.from_env({
                "LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url, "REDIS_URL": redis_url(),
                "REDIS_KEY_PREFIX": keys.prefix, "SLACK_API_URL": fake.base_url})
            metrics = Metrics()
            async with Services(settings) as services:
                server = HealthServer(services, metrics)
                engine = services.engine(definition.profile, observer=metrics, limits=definition.limits,
                                         on_refusal=metrics.limit_refused,
                                         engine_type=partial(InstrumentedEngine, metrics=metrics))
                runtime = build_runtime(definition, engine, services, server.app, metrics)
                assert isinstance(runtime, SlackBot)
                port = await server.start("127.0.0.1", 0)
                await runtime.start()
                try:
                    payload = app_mention_event(text="<@UBOT> " + "please read all of this " * 3,
                                                ts="1700000100.000100", event_id="EvLong1")
                    fake.seed_from_event(payload)
                    body = json.dumps(payload).encode()
                    async with aiohttp.ClientSession() as http:
                        url = f"http://127.0.0.1:{port}/slack/helpdesk/events"
                        async with http.post(url, data=body, headers=signed_headers(body, SECRET)) as sent:
                            assert sent.status == 200
                    await runtime.wait_idle()
                finally:
                    await runtime.stop()
                    await server.stop()
            [reply] = [m.text for m in fake.bot_replies("C1", "1700000100.000100")]
            assert "max_input_chars" in reply and "at most 20" in reply
            assert chat_api.requests == [] and fake.calls_to("reactions.add") == []
            rendered = metrics.render().decode()
            assert 'lunos_limit_refusals_total{bot="helpdesk",limit="max_input_chars"} 1.0' in rendered
            assert re.search(r'lunos_platform_calls_total\{bot="helpdesk",method="chat.postMessage",'
                             r'platform="slack",status="200"\} 1.0', rendered)


class TestRedisUrls:
    """REDIS_URL forms for Sentinel and Cluster, parsed, and mistakes named."""

    def test_sentinel(self) -> None:
        """Hosts, service, database, password and options."""
        target = parse_redis_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2/mymaster/2?sentinel_password=x")
        assert (target.kind, target.tls, target.service, target.db, target.password) == (
            "sentinel", False, "mymaster", 2, "s3cret")
        assert target.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
        assert dict(target.options) == {"sentinel_password": "x"}

    def test_cluster(self) -> None:
        """TLS cluster nodes; a database other than 0 is refused."""
        target = parse_redis_url("rediss+cluster://a:7000,b:7001")
        assert (target.kind, target.tls, target.nodes) == ("cluster", True, (("a", 7000), ("b", 7001)))
        with pytest.raises(SettingsError, match="only database 0"):
            parse_redis_url("redis+cluster://a:7000/3")
        with pytest.raises(SettingsError, match="name the Sentinel service"):
            parse_redis_url("redis+sentinel://a:26379")

    def test_unknown_scheme_and_tls_files(self, tmp_path: Path) -> None:
        """An unknown scheme lists the known ones; a client certificate needs its key; a missing file is named."""
        with pytest.raises(SettingsError, match=r"unknown scheme.*redis\+sentinel"):
            Settings.from_env({"REDIS_URL": "memcached://x:1"})
        cert = tmp_path / "c.pem"
        cert.write_text("x")
        with pytest.raises(SettingsError, match="go together"):
            Settings.from_env({"REDIS_TLS_CERT_FILE": str(cert)})
        with pytest.raises(SettingsError, match=r"REDIS_TLS_CA_FILE=.*no such file"):
            Settings.from_env({"REDIS_TLS_CA_FILE": str(tmp_path / "missing.pem")})
