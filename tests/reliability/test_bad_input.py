"""Malformed input, generated with hypothesis, at every door: the Slack Events endpoint (signed
requests with bodies that are not what Slack sends), the Discord gateway (malformed MESSAGE_CREATEs)
and the bot-definition loader (malformed TOML and fields). Each case gets a clear 4xx or an error
naming the file and the field, and the bot still answers a good message afterwards."""

from __future__ import annotations

import io
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bots.definitions import load_definitions, parse_definition, top_level_field_names
from bots.platforms import validate_platform_table
from bots.settings import Settings
from core.errors import DefinitionError
from tests.adapters.discord.conftest import GENERAL
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import signed_headers
from tests.reliability.conftest import SideFactory
from tests.reliability.harness import (
    SECRETS,
    SLACK_SIGNING_SECRET,
    DiscordSide,
    SlackSide,
    Workload,
    converse,
)
from tests.reliability.invariants import check

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HUGE_MESSAGE_CHARS = 100_000
OVERSIZED_BODY_BYTES = 2 * 1024 * 1024  # past aiohttp's 1 MiB request limit
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data",
                 "application/octet-stream", ""]
SHORT_ANSWER = Behaviour(text="Noted.")  # the model's answer does not matter here, only what reaches it

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Unicode with control characters, surrogates excluded (JSON cannot carry lone ones as UTF-8).
wild_text = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=300)


async def post_raw(side: SlackSide, body: bytes, content_type: str) -> int:
    headers = signed_headers(body, SLACK_SIGNING_SECRET)
    if content_type:
        headers["Content-Type"] = content_type
    else:
        headers.pop("Content-Type")
    async with side.http.post(side.url, data=io.BytesIO(body), headers=headers) as response:
        await response.read()
        return response.status


async def still_answers(side: SlackSide | DiscordSide, api: FakeChatAPI, logs: io.StringIO) -> None:
    """The bot is up and answers a good message, and nothing above leaked a secret."""
    api.default_behaviour = Behaviour(chunk_chars=24)
    sent = await converse(side, Workload(side.platform, 2, long_every=0), 1)
    report = check(sent, api.requests, alive=side.alive, log_text=logs.getvalue(), secrets=SECRETS)
    report.assert_clean()
    assert report.outcomes["answered"] == 2


class TestSlackEndpoint:
    """Signed requests whose bodies are not Slack events."""

    @FUZZ
    @given(body=st.binary(max_size=600), content_type=st.sampled_from(CONTENT_TYPES))
    async def test_arbitrary_bytes_are_4xx(self, open_side: SideFactory, fault_api: FakeChatAPI,
                                           body: bytes, content_type: str) -> None:
        """Any bytes under a valid signature: a 4xx, never a 5xx, and no model call."""
        async with open_side("slack") as side:
            assert isinstance(side, SlackSide)
            status = await post_raw(side, body, content_type)
            assert 400 <= status < 500, (body[:80], content_type, status)
            assert side.alive and not fault_api.requests

    @FUZZ
    @given(value=json_values)
    async def test_json_that_is_not_an_event_is_4xx(self, open_side: SideFactory, fault_api: FakeChatAPI,
                                                    value: Any) -> None:
        """Well-formed JSON that is not an Events API object (a list, a string, null, a stray
        object): a 4xx and no model call."""
        async with open_side("slack") as side:
            assert isinstance(side, SlackSide)
            status = await post_raw(side, json.dumps(value).encode(), "application/json")
            assert 400 <= status < 500, (value, status)
            assert side.alive and not fault_api.requests

    @FUZZ
    @given(event=json_values, drop=st.sets(st.sampled_from(["event_id", "team_id", "api_app_id",
                                                            "authorizations", "event"])))
    async def test_broken_event_envelopes_are_refused_or_dropped(
        self, open_side: SideFactory, fault_api: FakeChatAPI, event: Any, drop: set[str]
    ) -> None:
        """An event_callback with fields missing or of the wrong type: never a 5xx; if acked (200),
        nothing is answered."""
        async with open_side("slack") as side:
            assert isinstance(side, SlackSide)
            payload = side.payload("conv-envelope", "hello")
            payload["event"] = event
            for key in drop:
                payload.pop(key, None)
            status = await post_raw(side, json.dumps(payload).encode(), "application/json")
            await side.bot.wait_idle()
            assert status < 500, (payload, status)
            assert side.alive and not fault_api.requests

    async def test_oversized_body_is_413(self, open_side: SideFactory, fault_api: FakeChatAPI,
                                         captured_logs: io.StringIO) -> None:
        """A 2 MiB body is refused with 413 before anything reads it; the bot answers afterwards."""
        async with open_side("slack") as side:
            assert isinstance(side, SlackSide)
            assert await post_raw(side, b"{" + b" " * OVERSIZED_BODY_BYTES + b"}", "application/json") == 413
            await still_answers(side, fault_api, captured_logs)

    async def test_unicode_control_chars_and_100kb_messages_are_answered(
        self, open_side: SideFactory, fault_api: FakeChatAPI, captured_logs: io.StringIO
    ) -> None:
        """Messages of control characters, RTL marks, emoji and NULs, and one of 100 KB, are each
        answered once, and the model received each text intact."""
        fault_api.default_behaviour = SHORT_ANSWER
        texts = ["\x00\x01\x07\x1b[31mred\x7f", "\u202eevil\u202c \u200b zero-width", "emoji 🧪👩‍👩‍👧 ﷽",
                 "line\r\nbreak\ttab\\u0000", "x" * HUGE_MESSAGE_CHARS]
        async with open_side("slack") as side:
            assert isinstance(side, SlackSide)
            payloads = [side.payload(f"conv-wild-{i}", text) for i, text in enumerate(texts)]
            for payload in payloads:
                assert await side.post(payload) == 200
            await side.bot.wait_idle()
            for payload in payloads:
                thread = payload["event"]["ts"]
                assert [m.text for m in side.fake.bot_replies("C1", thread)] == ["Noted."]
            asked = [r.body["messages"][-1]["content"] for r in fault_api.requests if r.body]
            assert sorted(len(a) for a in asked)[-1] >= HUGE_MESSAGE_CHARS
            assert any("\x00\x01\x07" in a for a in asked) and any("👩‍👩‍👧" in a for a in asked)
            await still_answers(side, fault_api, captured_logs)


def valid_message(side: DiscordSide) -> dict[str, Any]:
    return {"id": "9" * 18, "channel_id": GENERAL, "guild_id": "2000", "type": 0, "tts": False,
            "content": f"<@{side.fake.bot_user_id}> hi", "author": side.fake.human(), "mentions": [side.fake.bot_user],
            "mention_roles": [], "mention_everyone": False, "attachments": [], "embeds": [], "pinned": False,
            "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None, "flags": 0}


class TestDiscordGateway:
    """Malformed MESSAGE_CREATE payloads from the gateway."""

    async def test_malformed_message_creates_leave_the_bot_up(
        self, open_side: SideFactory, fault_api: FakeChatAPI, captured_logs: io.StringIO
    ) -> None:
        """Fields dropped or replaced by junk, one payload at a time: each is dropped with a warning
        naming the event (or answered, when still a message), and the bot answers afterwards."""
        fault_api.default_behaviour = SHORT_ANSWER
        async with open_side("discord") as side:
            assert isinstance(side, DiscordSide)
            base = valid_message(side)

            @settings(max_examples=60, deadline=None, database=None)
            @given(drop=st.sets(st.sampled_from(sorted(base))), junk=st.dictionaries(
                st.sampled_from(sorted(base)), json_values, max_size=3), content=wild_text)
            def mutations(drop: set[str], junk: dict[str, Any], content: str) -> None:
                payload = {k: v for k, v in base.items() if k not in drop}
                payload.update(junk)
                if "content" not in drop and "content" not in junk:
                    payload["content"] = f"<@{side.fake.bot_user_id}> {content}"
                generated.append(payload)

            generated: list[dict[str, Any]] = []
            mutations()
            for number, payload in enumerate(generated):
                payload["id"] = str(10**17 + number) if "id" not in payload or number % 2 else payload["id"]
                await side.fake.dispatch_raw("MESSAGE_CREATE", payload)
            # Gateway events are handled in order: once the good messages are answered, so is the junk.
            await still_answers(side, fault_api, captured_logs)
            await side.bot.wait_idle()
            logged = captured_logs.getvalue()
            assert "discord.malformed_event" in logged
            assert "discord.message_crashed" not in logged  # what discord.py accepted, the adapter handles


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes, minus its surrogate pairs (TOML wants scalar values)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else "nan"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(data: dict[str, Any]) -> str:
    return "\n".join(f"{toml_string(key)} = {toml_value(value)}" for key, value in data.items()) + "\n"


toml_values = st.recursive(
    st.booleans() | st.integers(-10, 10**6) | st.text(max_size=12) | st.just(""),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
GOOD = {"name": "fuzz", "platform": "slack", "app_id": "fuzz-app", "model": "m/a",
        "slack": {"bot_token": "xoxb-1", "signing_secret": "s" * 8}}


def assert_names_file_and_field(error: DefinitionError, path: Path) -> None:
    assert error.file == str(path)
    assert error.field and error.problem
    assert str(error).startswith(f"{path}: {error.field}: ")


class TestDefinitionLoader:
    """Malformed bot definitions: an error naming the file and the field, never a crash."""

    @settings(max_examples=80, deadline=None)
    @given(text=st.text(max_size=300))
    def test_arbitrary_text(self, text: str) -> None:
        """Any text is a definition or a `DefinitionError` naming the file."""
        path = Path("bots/fuzz.toml")
        try:
            parse_definition(path, text, {})
        except DefinitionError as error:
            assert_names_file_and_field(error, path)

    @settings(max_examples=120, deadline=None)
    @given(changes=st.dictionaries(st.sampled_from(sorted(top_level_field_names() | {"extra", "slack_token"})),
                                   toml_values, max_size=4),
           platform_table=st.dictionaries(st.sampled_from(["bot_token", "signing_secret", "app_token",
                                                           "require_mention", "streaming", "edits_per_minute",
                                                           "token", "guild_ids", "edit_interval_s",
                                                           "shard_count", "shard_ids", "junk"]),
                                          toml_values, max_size=3),
           platform=st.sampled_from(["slack", "discord"]))
    def test_malformed_fields(self, changes: dict[str, Any], platform_table: dict[str, Any], platform: str) -> None:
        """Fields of the wrong type, empty, unknown or out of range — at the top, in [history] and in
        the platform table — give an error naming the file and that field."""
        path = Path("bots/fuzz.toml")
        data: dict[str, Any] = {**GOOD, "platform": platform}
        data[platform] = {**({"token": "t" * 10} if platform == "discord" else GOOD["slack"]), **platform_table}
        if platform == "discord":
            data.pop("slack", None)
        data.update(changes)
        text = to_toml(data)
        tomllib.loads(text)  # the generator writes valid TOML: any error below is about fields
        try:
            definition = parse_definition(path, text, {})
            validate_platform_table(definition, Settings.from_env({"SLACK_API_URL": "http://127.0.0.1/api/"}))
        except DefinitionError as error:
            assert_names_file_and_field(error, path)

    @pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01 not utf-8", b'name = "a\x00b"\n', b"[[[\n"])
    def test_unreadable_files_in_a_directory(self, tmp_path: Path, content: bytes) -> None:
        """A file that is not UTF-8 or not TOML is one error naming it; the good file still loads."""
        (tmp_path / "bad.toml").write_bytes(content)
        (tmp_path / "good.toml").write_text(to_toml(GOOD))
        report = load_definitions(tmp_path, {})
        assert [d.name for d in report.definitions] == ["fuzz"]
        assert len(report.errors) == 1
        assert_names_file_and_field(report.errors[0], tmp_path / "bad.toml")
