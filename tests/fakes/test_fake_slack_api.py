"""Self-tests for the fake Slack Web API / Socket Mode server in tests/fakes/slack_api.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import (
    SIGN_IN_PAGE,
    FakeSlackAPI,
    app_mention_event,
    message_event,
    reaction_event,
    signed_headers,
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlackAPI]:
    async with FakeSlackAPI() as server:
        yield server


def client_for(fake: FakeSlackAPI, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or fake.bot_token, base_url=fake.base_url)


async def test_base_url_shape(fake: FakeSlackAPI) -> None:
    assert fake.base_url.startswith("http://127.0.0.1:")
    assert fake.base_url.endswith("/api/")


async def test_auth_test_and_bots_info(fake: FakeSlackAPI) -> None:
    client = client_for(fake)
    auth = await client.auth_test()
    assert auth["user_id"] == "UBOT"
    assert auth["bot_id"] == "BBOT"
    assert auth["team_id"] == "T1"
    bot = await client.bots_info(bot="BBOT")
    assert bot["bot"]["app_id"] == "A1"
    assert fake.calls_to("auth.test")[0].token == "xoxb-test"
    with pytest.raises(SlackApiError) as info:
        await client_for(fake, token="xoxb-wrong").auth_test()
    assert info.value.response["error"] == "invalid_auth"


async def test_post_update_replies_reflect_state(fake: FakeSlackAPI) -> None:
    client = client_for(fake)
    parent_ts = fake.add_user_message("C1", "<@UBOT> hello")
    posted = await client.chat_postMessage(channel="C1", thread_ts=parent_ts, text="thinking…")
    ts = posted["ts"]
    assert posted["channel"] == "C1"
    assert float(ts) > float(parent_ts)

    updated = await client.chat_update(channel="C1", ts=ts, text="Hello there!")
    assert updated["ok"] is True
    message = fake.messages[("C1", ts)]
    assert message.text == "Hello there!"
    assert message.edits == 1
    assert message.text_history == ["thinking…", "Hello there!"]

    replies = await client.conversations_replies(channel="C1", ts=parent_ts, limit=50)
    assert [m["ts"] for m in replies["messages"]] == [parent_ts, ts]
    assert replies["messages"][0]["user"] == "U1"
    assert replies["messages"][1]["text"] == "Hello there!"
    assert replies["messages"][1]["bot_id"] == "BBOT"
    assert replies["messages"][1]["thread_ts"] == parent_ts
    assert replies["has_more"] is False

    assert [m.ts for m in fake.thread("C1", parent_ts)] == [parent_ts, ts]
    assert [m.ts for m in fake.bot_replies("C1", parent_ts)] == [ts]
    assert fake.calls_to("chat.update")[0].args["text"] == "Hello there!"

    # markdown_text wins over text
    md = await client.chat_postMessage(channel="C1", text="fallback", markdown_text="**bold**")
    assert fake.messages[("C1", md["ts"])].text == "**bold**"

    # conversations.replies pagination
    page = await client.conversations_replies(channel="C1", ts=parent_ts, limit=1)
    assert page["has_more"] is True
    cursor = page["response_metadata"]["next_cursor"]
    page2 = await client.conversations_replies(channel="C1", ts=parent_ts, limit=1, cursor=cursor)
    assert [m["ts"] for m in page2["messages"]] == [ts]


async def test_update_errors(fake: FakeSlackAPI) -> None:
    client = client_for(fake)
    ts = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
    with pytest.raises(SlackApiError) as too_long:
        await client.chat_update(channel="C1", ts=ts, text="a" * 4001)
    assert too_long.value.response["error"] == "msg_too_long"
    assert fake.messages[("C1", ts)].edits == 0
    await client.chat_update(channel="C1", ts=ts, text="a" * 4000)

    with pytest.raises(SlackApiError) as missing:
        await client.chat_update(channel="C1", ts="1.000001", text="y")
    assert missing.value.response["error"] == "message_not_found"

    with pytest.raises(SlackApiError) as post_too_long:
        await client.chat_postMessage(channel="C1", text="b" * 40_001)
    assert post_too_long.value.response["error"] == "msg_too_long"


async def test_delete_and_reactions_and_status(fake: FakeSlackAPI) -> None:
    client = client_for(fake)
    user_ts = fake.add_user_message("C1", "hi")
    await client.reactions_add(channel="C1", timestamp=user_ts, name="eyes")
    assert fake.messages[("C1", user_ts)].reactions == {"eyes"}
    with pytest.raises(SlackApiError) as again:
        await client.reactions_add(channel="C1", timestamp=user_ts, name="eyes")
    assert again.value.response["error"] == "already_reacted"
    await client.reactions_remove(channel="C1", timestamp=user_ts, name="eyes")
    assert fake.reactions[("C1", user_ts)] == set()

    await client.assistant_threads_setStatus(channel_id="D1", thread_ts=user_ts, status="is thinking…")
    assert fake.statuses[("D1", user_ts)] == "is thinking…"

    ts = (await client.chat_postMessage(channel="C1", text="bye"))["ts"]
    await client.chat_delete(channel="C1", ts=ts)
    assert ("C1", ts) not in fake.messages
    assert fake.deleted[-1].ts == ts

    info = await client.users_info(user="U1")
    assert info["user"]["id"] == "U1"
    assert "display_name" in info["user"]["profile"]
    fake.add_user("U2", real_name="Ada Lovelace", display_name="ada")
    info2 = await client.users_info(user="U2")
    assert info2["user"]["profile"]["display_name"] == "ada"
    channel = await client.conversations_info(channel="D9")
    assert channel["channel"]["is_im"] is True

    unknown = await client.api_call("team.info")
    assert unknown["ok"] is True
    assert fake.calls_to("team.info")[0].status == 200


async def test_rate_limits_answer_429_with_retry_after() -> None:
    async with FakeSlackAPI(rate_limits={"chat.update": 3}) as fake:
        client = client_for(fake)
        ts = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
        for i in range(3):
            await client.chat_update(channel="C1", ts=ts, text=f"v{i}")
        with pytest.raises(SlackApiError) as info:
            await client.chat_update(channel="C1", ts=ts, text="v3")
        assert info.value.response.status_code == 429
        assert info.value.response["error"] == "ratelimited"
        retry_after = int(info.value.response.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert fake.rate_limited_count == 1
        assert fake.calls_to("chat.update")[-1].status == 429
        assert fake.messages[("C1", ts)].text == "v2"
        # other methods are not limited
        await client.chat_postMessage(channel="C1", text="still fine")


async def test_rate_limit_window_rolls_with_clock() -> None:
    now = [1000.0]
    async with FakeSlackAPI(rate_limits={"chat.postMessage": 2}, clock=lambda: now[0]) as fake:
        client = client_for(fake)
        await client.chat_postMessage(channel="C1", text="a")
        now[0] += 30
        await client.chat_postMessage(channel="C1", text="b")
        with pytest.raises(SlackApiError) as info:
            await client.chat_postMessage(channel="C1", text="c")
        assert info.value.response.headers["Retry-After"] == "30"
        now[0] += 30.5  # the first call left the window
        await client.chat_postMessage(channel="C1", text="c")
        assert fake.rate_limited_count == 1


async def test_post_limit_is_a_bucket_per_channel() -> None:
    """chat.postMessage: a burst per channel, then one a second; other channels are not affected."""
    now = [1000.0]
    async with FakeSlackAPI(post_limit=(2, 1.0), clock=lambda: now[0]) as fake:
        client = client_for(fake)
        await client.chat_postMessage(channel="C1", text="a")
        await client.chat_postMessage(channel="C1", text="b")
        with pytest.raises(SlackApiError) as info:
            await client.chat_postMessage(channel="C1", text="c")
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] == "1"
        await client.chat_postMessage(channel="C2", text="other channel")
        now[0] += 1.0
        await client.chat_postMessage(channel="C1", text="c")
        assert fake.rate_limited_count == 1
        assert fake.rate_limited == [("chat.postMessage", 1000.0)]


async def test_fail_next(fake: FakeSlackAPI) -> None:
    client = client_for(fake)
    fake.fail_next("chat.postMessage", retry_after=7, times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            await client.chat_postMessage(channel="C1", text="x")
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] == "7"
    await client.chat_postMessage(channel="C1", text="x")
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 429, 200]
    assert fake.rate_limited_count == 0

    fake.fail_next("chat.startStream", status=200, error="not_allowed")
    with pytest.raises(SlackApiError) as not_allowed:
        await client.chat_startStream(channel="C1", thread_ts="1700000000.000100")
    assert not_allowed.value.response.status_code == 200
    assert not_allowed.value.response["error"] == "not_allowed"

    fake.fail_next("chat.update", status=500, error="internal_error")
    with pytest.raises(SlackApiError) as server_error:
        await client.chat_update(channel="C1", ts="1.1", text="x")
    assert server_error.value.response.status_code == 500


async def test_native_streaming(fake: FakeSlackAPI) -> None:
    client = client_for(fake)
    parent = fake.add_user_message("D1", "tell me a story")
    start = await client.chat_startStream(
        channel="D1", thread_ts=parent, recipient_team_id="T1", recipient_user_id="U1", markdown_text="Once"
    )
    ts = start["ts"]
    assert fake.messages[("D1", ts)].streaming is True
    await client.chat_appendStream(channel="D1", ts=ts, markdown_text=" upon")
    await client.chat_appendStream(channel="D1", ts=ts, chunks=[{"type": "markdown_text", "text": " a"}])
    await client.chat_stopStream(channel="D1", ts=ts, markdown_text=" time.")
    message = fake.messages[("D1", ts)]
    assert message.text == "Once upon a time."
    assert message.streaming is False
    assert message.thread_ts == parent
    assert [m.ts for m in fake.bot_replies("D1", parent)] == [ts]

    with pytest.raises(SlackApiError) as stopped:
        await client.chat_appendStream(channel="D1", ts=ts, markdown_text="more")
    assert stopped.value.response["error"] == "message_not_in_streaming_state"

    ts2 = (await client.chat_startStream(channel="D1", thread_ts=parent))["ts"]
    fake.native_streaming_error = "message_not_in_streaming_state"
    with pytest.raises(SlackApiError) as forced:
        await client.chat_appendStream(channel="D1", ts=ts2, markdown_text="x")
    assert forced.value.response["error"] == "message_not_in_streaming_state"
    fake.native_streaming_error = None

    # slack-sdk's buffered helper works against the fake too
    streamer = await client.chat_stream(channel="D1", thread_ts=parent, buffer_size=4)
    await streamer.append(markdown_text="Hello")
    await streamer.append(markdown_text=", world")
    await streamer.stop()
    streamed = fake.bot_replies("D1", parent)[-1]
    assert streamed.text == "Hello, world"
    assert streamed.streaming is False


async def test_wait_for_wakes_on_calls(fake: FakeSlackAPI) -> None:
    client = client_for(fake)
    waiter = asyncio.create_task(fake.wait_for(lambda: len(fake.calls_to("chat.postMessage")) >= 2))
    await client.chat_postMessage(channel="C1", text="1")
    assert not waiter.done()
    await client.chat_postMessage(channel="C1", text="2")
    await asyncio.wait_for(waiter, timeout=5)
    with pytest.raises(TimeoutError):
        await fake.wait_for(lambda: False, timeout=0.05)


async def test_socket_mode_round_trip(fake: FakeSlackAPI) -> None:
    app = AsyncApp(client=AsyncWebClient(token=fake.bot_token, base_url=fake.base_url))
    mentioned = asyncio.Event()
    seen: list[dict[str, Any]] = []

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        seen.append(event)
        await say(text="hi!", thread_ts=event["ts"])
        mentioned.set()

    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await fake.wait_for_socket_client()
        assert fake.calls_to("apps.connections.open")[0].token == "xapp-test"

        payload = app_mention_event(text="<@UBOT> hi", ts="1700000100.000100", event_id="Ev1")
        envelope_id = await fake.send_socket_event(payload)
        ack = await fake.wait_for_ack(envelope_id)
        assert ack["envelope_id"] == envelope_id
        await asyncio.wait_for(mentioned.wait(), timeout=5)
        assert seen[0]["text"] == "<@UBOT> hi"
        await fake.wait_for(lambda: len(fake.bot_replies("C1", "1700000100.000100")) == 1)
        assert fake.bot_replies("C1", "1700000100.000100")[0].text == "hi!"
        # the event's message was seeded into the fake's state
        assert fake.messages[("C1", "1700000100.000100")].user == "U1"
        assert len(fake.calls_to("auth.test")) == 1
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]


def test_signed_headers() -> None:
    body = json.dumps({"type": "event_callback"}).encode()
    headers = signed_headers(
        body, "secret", timestamp=1_700_000_000, retry_num=1, retry_reason="http_timeout"
    )
    expected = hmac.new(b"secret", b"v0:1700000000:" + body, hashlib.sha256).hexdigest()
    assert headers["X-Slack-Signature"] == f"v0={expected}"
    assert headers["X-Slack-Request-Timestamp"] == "1700000000"
    assert headers["X-Slack-Retry-Num"] == "1"
    assert headers["X-Slack-Retry-Reason"] == "http_timeout"
    assert headers["Content-Type"] == "application/json"


def test_event_builders() -> None:
    mention = app_mention_event(text="<@UBOT> q", ts="1.000001", thread_ts="1.000000", event_id="Ev9")
    assert mention["type"] == "event_callback"
    assert mention["event"]["type"] == "app_mention"
    assert mention["event"]["thread_ts"] == "1.000000"
    assert mention["authorizations"][0]["user_id"] == "UBOT"
    dm = message_event(text="hey", ts="2.000001", event_id="Ev10", subtype="bot_message", bot_id="B2")
    assert dm["event"]["channel_type"] == "im"
    assert dm["event"]["subtype"] == "bot_message"
    assert dm["event"]["bot_id"] == "B2"
    assert "thread_ts" not in dm["event"]


class TestFiles:
    """Uploaded files are served at their url_private(_download) to the bot token only."""

    async def test_served_with_the_bot_token(self, fake: FakeSlackAPI) -> None:
        """Both URLs give the bytes and the file's type to `Authorization: Bearer <bot token>`."""
        file = fake.add_file("notes.txt", b"hello", mimetype="text/plain")
        assert file["size"] == 5 and file["mode"] == "hosted" and file["name"] == "notes.txt"
        async with aiohttp.ClientSession() as http:
            for url in (file["url_private"], file["url_private_download"]):
                async with http.get(url, headers={"Authorization": f"Bearer {fake.bot_token}"}) as response:
                    assert response.status == 200 and response.content_type == "text/plain"
                    assert await response.read() == b"hello"
        assert [d.served for d in fake.downloads_of(file["id"])] == [True, True]

    @pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer xoxb-wrong"},
                                         {"Authorization": "Bearer xapp-test"}])
    async def test_anyone_else_gets_the_sign_in_page(self, fake: FakeSlackAPI, headers: dict[str, str]) -> None:
        """No token or another one: 200 with Slack's HTML sign-in page, never the file."""
        file = fake.add_file("chart.png", b"\x89PNG-bytes", mimetype="image/png")
        async with aiohttp.ClientSession() as http, http.get(file["url_private_download"], headers=headers) as response:
            assert response.status == 200 and response.content_type == "text/html"
            assert await response.read() == SIGN_IN_PAGE
        (download,) = fake.downloads_of(file["id"])
        assert not download.served and download.authorization == headers.get("Authorization")

    async def test_without_files_read_the_token_gets_the_page_too(self, fake: FakeSlackAPI) -> None:
        fake.files_read_scope = False
        file = fake.add_file("a.txt", b"x", mimetype="text/plain")
        async with aiohttp.ClientSession() as http, http.get(
            file["url_private"], headers={"Authorization": f"Bearer {fake.bot_token}"}
        ) as response:
            assert await response.read() == SIGN_IN_PAGE

    async def test_files_info_and_file_shapes(self, fake: FakeSlackAPI) -> None:
        """files.info answers the full object; the tombstone, external and id-only shapes carry no
        URL of the fake's."""
        file = fake.add_file("a.md", b"# hi", mimetype="text/markdown", size=99)
        assert file["size"] == 99  # a reported size may lie
        info = await client_for(fake).files_info(file=file["id"])
        assert info["file"]["url_private_download"] == file["url_private_download"]
        assert info["file"]["size"] == 4
        with pytest.raises(SlackApiError):
            await client_for(fake).files_info(file="FNOPE")
        assert fake.tombstone_file() == {"id": "FDELETED", "mode": "tombstone"}
        assert fake.unshared_file(file) == {"id": file["id"], "file_access": "check_file_info"}
        external = fake.external_file("plan.pdf", "https://drive.example.com/plan.pdf")
        assert external["is_external"] and external["url_private"].startswith("https://drive.example.com/")

    def test_event_builders_carry_files(self) -> None:
        """A message with files is a file_share; a mention carries them as they are."""
        files = [{"id": "F1", "name": "a.png"}]
        message = message_event(text="", ts="1.000001", event_id="Ev1", files=files)
        assert message["event"]["subtype"] == "file_share" and message["event"]["files"] == files
        mention = app_mention_event(text="<@UBOT> look", ts="1.000002", event_id="Ev2", files=files)
        assert mention["event"]["files"] == files and "subtype" not in mention["event"]


class TestReactionsAndCommands:
    """Reaction events as Slack documents them, and slash commands' response_url."""

    def test_reaction_event(self) -> None:
        added = reaction_event(reaction="+1", channel="C1", ts="1.000001", user="U2", event_id="Ev1")
        assert added["event"]["type"] == "reaction_added"
        assert added["event"]["item"] == {"type": "message", "channel": "C1", "ts": "1.000001"}
        assert added["event"]["item_user"] == "UBOT" and added["event"]["user"] == "U2"
        removed = reaction_event(reaction="+1", channel="C1", ts="1.000001", added=False, item_user=None,
                                 event_id="Ev2")
        assert removed["event"]["type"] == "reaction_removed" and "item_user" not in removed["event"]

    async def test_response_url(self, fake: FakeSlackAPI) -> None:
        """A command's response_url takes JSON answers (the markdown block is what is shown), up to
        five, and only those of its own command."""
        fields = fake.slash_command("show", user="U2", channel="C9")
        assert (fields["command"], fields["text"], fields["user_id"], fields["channel_id"]) == (
            "/lunos", "show", "U2", "C9")
        assert fields["team_id"] == fake.team_id and fields["trigger_id"]
        other = fake.slash_command("help")
        async with aiohttp.ClientSession() as http:
            body = {"response_type": "ephemeral", "text": "plain",
                    "blocks": [{"type": "markdown", "text": "**shown**"}]}
            for _ in range(5):
                async with http.post(fields["response_url"], json=body) as response:
                    assert response.status == 200 and await response.text() == "ok"
            async with http.post(fields["response_url"], json=body) as response:
                assert response.status == 404
            async with http.post(other["response_url"], json={"text": "just text"}) as response:
                assert response.status == 200
            async with http.post(other["response_url"], json={}) as response:
                assert response.status == 400
        assert [r.text for r in fake.responses_to(fields)] == ["**shown**"] * 5
        assert [r.text for r in fake.responses_to(other)] == ["just text"]

    async def test_users_info_roles(self, fake: FakeSlackAPI) -> None:
        fake.add_user("UADMIN", is_admin=True)
        fake.add_user("UOWNER", is_owner=True)
        client = client_for(fake)
        assert (await client.users_info(user="UADMIN"))["user"]["is_admin"] is True
        owner = (await client.users_info(user="UOWNER"))["user"]
        assert owner["is_owner"] is True and owner["is_primary_owner"] is False
        plain = (await client.users_info(user="U1"))["user"]
        assert (plain["is_admin"], plain["is_owner"], plain["is_primary_owner"]) == (False, False, False)

    def test_signed_form_headers(self) -> None:
        headers = signed_headers(b"command=%2Flunos", "secret", timestamp=1,
                                 content_type="application/x-www-form-urlencoded")
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
