"""Delivery: Bolt's ack comes first and the work after it, retries and duplicates are answered once
(also across replicas), signatures are checked, Socket Mode works, several apps run side by side,
and stopping lets replies finish or finalises them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from adapters.slack.sink import WORKING_REACTION
from core.engine import INTERRUPTED_NOTE
from core.types import ConversationKey
from tests.adapters.slack.conftest import MODEL_A, MODEL_B, SIGNING_SECRET, RigFactory, SlackRig
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import FakeSlackAPI, app_mention_event, signed_headers

SLOW_FIRST_TOKEN_S = 0.25  # long enough to see what happens before the answer, within FAST_TIMEOUTS
STOP_DEADLINE_S = 10.0  # a stop() that hangs fails here, with its own message, not at the test timeout


def slack_calls(rig: SlackRig) -> int:
    return len(rig.fake.calls)


def thread_key(payload: dict[str, Any]) -> ConversationKey:
    event = payload["event"]
    return ConversationKey("slack", payload["team_id"], event["channel"], event.get("thread_ts") or event["ts"])


class HeldEvent:
    """Keeps one event inside Bolt (in the bot's middleware, past the HTTP 503 gate) until released,
    as a request that arrived just before stop() would be."""

    def __init__(self, rig: SlackRig, event_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        middleware = rig.bot.middleware
        assert middleware is not None
        passes_on = middleware.async_process

        async def process(*, req: AsyncBoltRequest, resp: BoltResponse,
                          next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse | None:
            if req.body.get("event_id") == event_id:
                self.entered.set()
                await self.release.wait()
            return await passes_on(req=req, resp=resp, next=next)

        monkeypatch.setattr(middleware, "async_process", process)


class TestAckAndWorkingSignal:
    """The HTTP ack does not wait for the model; the reaction shows up at once, before any other
    Slack call the turn makes."""

    async def test_cold_first_event_ack_then_reaction_then_answer(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """The very first event of a fresh bot (no warm-up, empty name cache): Slack gets its 200
        before any reply text, and the reaction lands while the model is still thinking, before any
        users.info."""
        chat_api.script(MODEL_A, Behaviour(text="Here you go.", ttft_s=SLOW_FIRST_TOKEN_S))
        async with slack_rig() as rig:
            started_calls = len(rig.fake.calls)  # auth.test and bots.info, at start
            payload = rig.mention_payload("<@UBOT> what now?")
            assert await rig.post(payload) == 200
            acked_at = time.monotonic()
            await rig.fake.wait_for_call("reactions.add")
            assert not any(r.finished.is_set() for r in chat_api.requests)  # no answer yet
            await rig.bot.wait_idle()
            turn_calls = rig.fake.calls[started_calls:]
            assert turn_calls[0].method == "reactions.add"
            reaction, first_post = turn_calls[0], rig.fake.calls_to("chat.postMessage")[0]
            assert acked_at < first_post.at
            assert reaction.at < first_post.at and reaction.at < rig.fake.calls_to("users.info")[0].at
            assert rig.replies(payload) == ["Here you go."]

    async def test_mid_thread_mention_reacts_before_reading_the_thread(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """Called into a thread it must read first, the bot reacts before conversations.replies and
        before looking up anyone's name."""
        chat_api.script(MODEL_A, Behaviour(text="Caught up.", ttft_s=SLOW_FIRST_TOKEN_S))
        async with slack_rig() as rig:
            started_calls = len(rig.fake.calls)
            parent = rig.fake.add_user_message("C1", "Deploy on Friday?", user="U2")
            rig.fake.add_user_message("C1", "Never on Friday.", user="U3", thread_ts=parent)
            payload = rig.mention_payload("<@UBOT> what's the consensus?", thread_ts=parent)
            assert await rig.post(payload) == 200
            await rig.fake.wait_for_call("reactions.add")
            assert not any(r.finished.is_set() for r in chat_api.requests)  # no answer yet
            await rig.bot.wait_idle()
            methods = [c.method for c in rig.fake.calls[started_calls:]]
            assert methods[0] == "reactions.add"
            assert {"conversations.replies", "users.info"} <= set(methods)
            assert rig.replies(payload) == ["Caught up."]


class TestDeduplication:
    """One event id, one answer."""

    async def test_retries_and_duplicates_are_answered_once(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """The first delivery, two X-Slack-Retry-Num retries and a plain duplicate, all at once."""
        chat_api.script(MODEL_A, Behaviour(text="Only once.", ttft_s=0.1))
        async with slack_rig() as rig:
            payload = rig.mention_payload("<@UBOT> hello?")
            statuses = await asyncio.gather(
                rig.post(payload), rig.post(payload, retry_num=1), rig.post(payload, retry_num=2),
                rig.post(payload),
            )
            assert statuses == [200, 200, 200, 200]
            await rig.bot.wait_idle()
            assert len(chat_api.requests) == 1
            assert rig.replies(payload) == ["Only once."]
            assert len(rig.fake.calls_to("reactions.add")) == 1

    async def test_answered_once_across_replicas(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """Two replicas (two bots on one Redis) given the same event: one answers, the other skips."""
        chat_api.script(MODEL_A, Behaviour(text="From one replica.", ttft_s=0.1))
        async with FakeSlackAPI() as fake, slack_rig(fake=fake) as one, slack_rig(fake=fake) as two:
            payload = one.mention_payload("<@UBOT> who answers?")
            assert await asyncio.gather(one.post(payload), two.post(payload)) == [200, 200]
            await asyncio.gather(one.bot.wait_idle(), two.bot.wait_idle())
            assert len(chat_api.requests) == 1
            assert one.replies(payload) == ["From one replica."]


class TestSignatures:
    """Bolt's signature check in HTTP mode."""

    async def test_bad_or_stale_signatures_are_401(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """Wrong secret, stale timestamp or a tampered body: 401, no model call, no Slack call."""
        async with slack_rig() as rig:
            before = slack_calls(rig)
            payload = rig.mention_payload("<@UBOT> let me in")
            assert await rig.post(payload, secret="not-the-secret") == 401
            assert await rig.post(payload, timestamp=int(time.time()) - 600) == 401
            body = b'{"type": "event_callback"}'
            tampered = body.replace(b"event_callback", b"event_callbacc")
            async with rig.http.post(rig.url, data=tampered, headers=signed_headers(body, SIGNING_SECRET)) as sent:
                assert sent.status == 401
            await rig.bot.wait_idle()
            assert chat_api.requests == []
            assert slack_calls(rig) == before


    async def test_url_verification_challenge(self, slack_rig: RigFactory) -> None:
        """Slack's one-time URL check of the events endpoint gets its challenge back (when signed)."""
        async with slack_rig() as rig:
            body = b'{"token": "t", "challenge": "c-123", "type": "url_verification"}'
            async with rig.http.post(rig.url, data=body, headers=signed_headers(body, SIGNING_SECRET)) as sent:
                assert sent.status == 200
                assert (await sent.json())["challenge"] == "c-123"


class TestSocketMode:
    """Socket Mode against a local websocket speaking Slack's envelope protocol."""

    async def test_socket_mode_ack_then_answer_once(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """hello → events_api envelope → ack before the answer; a retried envelope is not answered again."""
        chat_api.script(MODEL_A, Behaviour(text="Over the socket.", ttft_s=SLOW_FIRST_TOKEN_S))
        async with FakeSlackAPI() as fake, slack_rig(fake=fake, app_token=fake.app_token) as rig:
            assert fake.socket_connections == 1
            assert fake.calls_to("apps.connections.open")[0].token == fake.app_token
            payload = app_mention_event(text="<@UBOT> ping", ts=rig.next_ts(), event_id="EvSocket1")
            envelope = await fake.send_socket_event(payload)
            await fake.wait_for_ack(envelope)
            assert fake.calls_to("chat.postMessage") == []
            await rig.bot.wait_idle()
            assert rig.replies(payload) == ["Over the socket."]
            retry = await fake.send_socket_event(payload, retry_attempt=1)
            await fake.wait_for_ack(retry)
            await rig.bot.wait_idle()
            assert len(chat_api.requests) == 1
            assert rig.replies(payload) == ["Over the socket."]


class TestSeveralApps:
    """Each Slack bot is its own app; several run in one process."""

    async def test_two_apps_side_by_side(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """Each bot answers its own app's events with its own X-App-ID and ignores the other app's."""
        chat_api.script(MODEL_A, Behaviour(text="hi"))
        async with (
            FakeSlackAPI(app_id="A1", bot_token="xoxb-one") as fake_one,
            FakeSlackAPI(app_id="A2", bot_token="xoxb-two", bot_user_id="UBOT2", bot_id="BBOT2") as fake_two,
            slack_rig(fake=fake_one, profile={"name": "alpha", "app_id": "app-alpha"}) as alpha,
            slack_rig(fake=fake_two, profile={"name": "beta", "app_id": "app-beta"}) as beta,
        ):
            assert (alpha.bot.identity.app_id, beta.bot.identity.app_id) == ("A1", "A2")
            to_alpha = alpha.mention_payload("<@UBOT> one")
            to_beta = beta.mention_payload("<@UBOT2> two")
            assert await asyncio.gather(alpha.post(to_alpha), beta.post(to_beta)) == [200, 200]
            wrong_app = beta.mention_payload("<@UBOT2> misrouted")
            assert await alpha.post(wrong_app) == 200
            await asyncio.gather(alpha.bot.wait_idle(), beta.bot.wait_idle())
            assert sorted(r.headers["X-App-ID"] for r in chat_api.requests) == ["app-alpha", "app-beta"]
            assert alpha.replies(to_alpha) == ["hi"] and beta.replies(to_beta) == ["hi"]
            assert fake_one.calls_to("chat.postMessage")[0].token == "xoxb-one"
            assert fake_two.calls_to("chat.postMessage")[0].token == "xoxb-two"
            assert alpha.bot.middleware is not None and alpha.bot.middleware.dropped == {"other_app": 1}


async def stop_while_inside_bolt(rig: SlackRig, held: HeldEvent, late: dict[str, Any]) -> None:
    """Post `late`, hold it inside Bolt, begin stop(), then let it go: it must get its 200 and
    stop() must wait for its answer."""
    late_status = asyncio.create_task(rig.post(late))
    async with asyncio.timeout(STOP_DEADLINE_S):
        await held.entered.wait()
    stopping = asyncio.create_task(rig.bot.stop())
    await asyncio.sleep(0)  # one turn of the loop: stop() closes intake before its first wait
    assert not rig.bot.ready
    held.release.set()
    async with asyncio.timeout(STOP_DEADLINE_S):
        assert await late_status == 200
        await stopping


class TestShutdown:
    """stop(): no new work, replies in flight finish or end in a final state."""

    async def test_event_inside_bolt_when_stop_begins_is_answered(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An event already past the 503 when stop() begins, while another reply streams, is acked,
        answered, and waited for by stop(), though its reply started after stop() did."""
        first_text = " ".join(["The first answer, streaming."] * 3)
        late_text = " ".join(["The late answer, also complete."] * 3)
        chat_api.script(MODEL_A, Behaviour(text=first_text, token_delay_s=0.01, chunk_chars=4),
                        Behaviour(text=late_text, token_delay_s=0.01, chunk_chars=4))
        async with slack_rig() as rig:
            first, late = rig.mention_payload("<@UBOT> go"), rig.mention_payload("<@UBOT> me too")
            held = HeldEvent(rig, late["event_id"], monkeypatch)
            assert await rig.post(first) == 200
            await rig.fake.wait_for(lambda: bool(rig.fake.calls_to("chat.postMessage")))
            await stop_while_inside_bolt(rig, held, late)
            assert rig.replies(first) == [first_text]
            assert rig.replies(late) == [late_text]

    async def test_stop_waits_for_an_event_inside_bolt_with_nothing_else_in_flight(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no reply running, stop() still waits for a request Bolt is dispatching, and answers it."""
        chat_api.script(MODEL_A, Behaviour(text="Answered on the way out."))
        async with slack_rig() as rig:
            late = rig.mention_payload("<@UBOT> anyone?")
            held = HeldEvent(rig, late["event_id"], monkeypatch)
            await stop_while_inside_bolt(rig, held, late)
            assert rig.replies(late) == ["Answered on the way out."]

    async def test_stop_waits_for_replies_in_flight(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """A reply streaming when stop() is called completes; later events get 503 (Slack retries)."""
        text = "A reply that takes a moment to stream out completely."
        chat_api.script(MODEL_A, Behaviour(text=text, token_delay_s=0.01, chunk_chars=4))
        async with slack_rig() as rig:
            payload = rig.mention_payload("<@UBOT> go")
            assert await rig.post(payload) == 200
            await rig.fake.wait_for(lambda: bool(rig.fake.calls_to("chat.postMessage")))
            await rig.bot.stop()
            assert rig.replies(payload) == [text]
            assert rig.fake.reactions[("C1", payload["event"]["ts"])] == set()
            assert await rig.post(rig.mention_payload("<@UBOT> too late")) == 503

    async def test_stop_finalises_what_cannot_finish(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """Past the grace period a reply is cut: its text stays, with a note, and no reaction remains."""
        chat_api.script(MODEL_A, Behaviour(text="word " * 400, token_delay_s=0.02, chunk_chars=5))
        chat_api.script(MODEL_B, Behaviour(kind="status", status=503))
        async with slack_rig(stop_grace_s=0.2) as rig:
            payload = rig.mention_payload("<@UBOT> long one")
            assert await rig.post(payload) == 200
            await rig.fake.wait_for(lambda: bool(rig.fake.calls_to("chat.postMessage")))
            await rig.bot.stop()
            (final,) = rig.replies(payload)
            assert final.startswith("word ") and final.endswith(INTERRUPTED_NOTE)
            assert rig.fake.reactions[("C1", payload["event"]["ts"])] == set()
            assert [c.args["name"] for c in rig.fake.calls_to("reactions.remove")] == [WORKING_REACTION]


class TestUndeliverable:
    """Slack errors no retry can fix stop the reply at once: nothing reposted, nothing saved."""

    async def test_bot_not_in_channel(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """not_in_channel on the first post: one call, no retry, no repost, the turn is not saved."""
        chat_api.script(MODEL_A, Behaviour(text="words " * 50, token_delay_s=0.01))
        async with slack_rig() as rig:
            rig.fake.fail_next("chat.postMessage", status=200, error="not_in_channel", times=10)
            payload = await rig.mention("<@UBOT> hello?")
            assert len(rig.fake.calls_to("chat.postMessage")) == 1
            assert rig.fake.calls_to("chat.update") == []
            assert not await rig.engine.has_history(thread_key(payload))

    async def test_reply_deleted_while_streaming(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """A moderator deletes the reply mid-stream: the next edit's message_not_found ends it, it is
        not posted again, and the turn is not saved."""
        chat_api.script(MODEL_A, Behaviour(text="A long and winding answer. " * 30, token_delay_s=0.01))
        async with slack_rig() as rig:
            payload = rig.mention_payload("<@UBOT> go on")
            assert await rig.post(payload) == 200
            await rig.fake.wait_for(lambda: bool(rig.fake.calls_to("chat.update")))
            (reply,) = rig.fake.bot_replies("C1", payload["event"]["ts"])
            rig.fake.delete_message("C1", reply.ts)
            deleted_at = time.monotonic()
            await rig.bot.wait_idle()
            assert len(rig.fake.calls_to("chat.postMessage")) == 1
            after = [c for c in rig.fake.calls_to("chat.update") if c.at > deleted_at]
            assert [c.response.get("error") for c in after] == ["message_not_found"]
            assert not await rig.engine.has_history(thread_key(payload))
            assert rig.fake.reactions[("C1", payload["event"]["ts"])] == set()


class TestLogContext:
    """STYLE rule 6: every log line of a turn says whose turn it is."""

    async def test_adapter_lines_carry_app_id_and_conversation(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A line the adapter logs outside the engine (the name lookup after the turn) carries the
        bot, app id, platform, conversation and event id."""
        async with slack_rig() as rig:
            rig.fake.fail_next("users.info", status=200, error="user_not_found")
            with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
                payload = await rig.mention("<@UBOT> hi")
            line = next(e for e in logs if e["event"] == "slack.user_lookup_failed")
            assert {k: line.get(k) for k in ("bot", "app_id", "platform", "conversation", "event_id")} == {
                "bot": rig.bot.name, "app_id": rig.engine.profile.app_id, "platform": "slack",
                "conversation": str(thread_key(payload)), "event_id": payload["event_id"],
            }
