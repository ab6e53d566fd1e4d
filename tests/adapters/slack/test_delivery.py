"""Delivery: Bolt's ack comes first and the work after it, retries and duplicates are answered once
(also across replicas), signatures are checked, Socket Mode works, several apps run side by side,
and stopping lets replies finish or finalises them."""

from __future__ import annotations

import asyncio
import time

from adapters.slack.sink import WORKING_REACTION
from core.engine import INTERRUPTED_NOTE
from tests.adapters.slack.conftest import MODEL_A, MODEL_B, SIGNING_SECRET, RigFactory, SlackRig
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import FakeSlackAPI, app_mention_event, signed_headers

SLOW_FIRST_TOKEN_S = 0.25  # long enough to see what happens before the answer, within FAST_TIMEOUTS
WORKING_SIGNAL_BUDGET_S = 0.3  # the "something is visible within ~300 ms"


def slack_calls(rig: SlackRig) -> int:
    return len(rig.fake.calls)


class TestAckAndWorkingSignal:
    """The HTTP ack does not wait for the model; the reaction shows up at once."""

    async def test_ack_first_then_reaction_then_answer(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """Slack gets its 200 before any reply text, and the reaction lands within ~300 ms."""
        chat_api.script(MODEL_A, Behaviour(text="Here you go.", ttft_s=SLOW_FIRST_TOKEN_S))
        async with slack_rig() as rig:
            await rig.mention("<@UBOT> warm up")  # Bolt's first request also runs auth.test
            payload = rig.mention_payload("<@UBOT> what now?")
            sent_at = time.monotonic()
            assert await rig.post(payload) == 200
            acked_at = time.monotonic()
            await rig.bot.wait_idle()
            reaction = next(c for c in rig.fake.calls_to("reactions.add")
                            if c.args["timestamp"] == payload["event"]["ts"])
            first_post = next(c for c in rig.fake.calls_to("chat.postMessage")
                              if c.args["thread_ts"] == payload["event"]["ts"])
            assert acked_at < first_post.at
            assert reaction.at - sent_at < WORKING_SIGNAL_BUDGET_S
            assert reaction.at < first_post.at
            assert rig.replies(payload) == ["Here you go."]


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


class TestShutdown:
    """stop(): no new work, replies in flight finish or end in a final state."""

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
