"""👍 / 👎 on a Slack bot's answers: `reaction_added` / `reaction_removed` become votes counted per app
ID, model and day (one per user and answer), and nothing else counts.

Real slack-bolt over HTTP mode against FakeSlackAPI, real Redis, the fake chat API; counts read
back through `RedisUsage.read`, as `lunos-bots usage` does.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.slack.translate import SlackIdentity, drop_reason, vote_for
from core.feedback import Vote
from core.redis_keys import RedisKeys
from core.usage import RedisUsage, day_of
from tests.adapters.slack.conftest import MODEL_A, RigFactory, SlackRig
from tests.fakes.slack_api import FakeSlackAPI, reaction_event

ME = SlackIdentity(team_id="T1", bot_user_id="UBOT", bot_id="BBOT", app_id="A1")


async def votes(redis: Redis, keys: RedisKeys, rig: SlackRig) -> tuple[int, int]:
    """(👍, 👎) on model A's answers, as `lunos-bots usage` reads them (two days: a test running
    across midnight UTC)."""
    rows = [r for r in await RedisUsage(redis, keys).read(app_id=rig.engine.profile.app_id, days=2)
            if r.model == MODEL_A]
    return sum(r.feedback_up for r in rows), sum(r.feedback_down for r in rows)


async def answered(rig: SlackRig) -> tuple[str, str, dict[str, Any]]:
    """A real answer in a channel thread: (channel, the answer's ts, the mention's payload)."""
    payload = await rig.mention("<@UBOT> what is 2+2?")
    (answer,) = rig.fake.bot_replies("C1", payload["event"]["ts"])
    return "C1", answer.ts, payload


class TestVotes:
    """Reactions on the bot's answers, end to end."""

    async def test_up_down_and_removal(self, slack_rig: RigFactory, redis: Redis, keys: RedisKeys) -> None:
        """A 👍, a second user's 👎 (with a skin tone), then the first 👍 removed: (1,0), (1,1), (0,1);
        the counts live in the usage hash of the app ID and day."""
        async with slack_rig() as rig:
            channel, ts, _ = await answered(rig)
            before = day_of(time.time())
            await rig.react("+1", channel=channel, ts=ts, user="U1")
            assert await votes(redis, keys, rig) == (1, 0)
            days = {before, day_of(time.time())}
            raw = [await redis.hget(keys.usage(rig.engine.profile.app_id, day), f"{MODEL_A}|feedback_up")
                   for day in days]
            assert sum(int(r) for r in raw if r is not None) == 1  # the raw field `<model>|feedback_up`
            await rig.react("thumbsdown::skin-tone-3", channel=channel, ts=ts, user="U2")
            assert await votes(redis, keys, rig) == (1, 1)
            await rig.react("+1", channel=channel, ts=ts, user="U1", added=False)
            assert await votes(redis, keys, rig) == (0, 1)

    async def test_retries_and_twin_reactions_count_once(
        self, slack_rig: RigFactory, redis: Redis, keys: RedisKeys
    ) -> None:
        """Slack's retry of one event, and 👍 added twice under two names, are one vote."""
        async with slack_rig() as rig:
            channel, ts, _ = await answered(rig)
            payload = rig.reaction_payload("thumbsup", channel=channel, ts=ts, user="U1")
            assert await rig.post(payload) == 200
            assert await rig.post(payload, retry_num=1) == 200
            await rig.bot.wait_idle()
            await rig.react("+1::skin-tone-2", channel=channel, ts=ts, user="U1")
            assert await votes(redis, keys, rig) == (1, 0)

    async def test_a_late_retry_does_not_bring_back_a_removed_vote(
        self, slack_rig: RigFactory, redis: Redis, keys: RedisKeys
    ) -> None:
        """👍, its removal, then Slack's retry of the 👍 event: the vote stays removed."""
        async with slack_rig() as rig:
            channel, ts, _ = await answered(rig)
            added = rig.reaction_payload("+1", channel=channel, ts=ts, user="U1")
            assert await rig.post(added) == 200
            await rig.bot.wait_idle()
            await rig.react("+1", channel=channel, ts=ts, user="U1", added=False)
            assert await rig.post(added, retry_num=1) == 200
            await rig.bot.wait_idle()
            assert await votes(redis, keys, rig) == (0, 0)

    async def test_changing_the_vote(self, slack_rig: RigFactory, redis: Redis, keys: RedisKeys) -> None:
        """A user's 👎 after their 👍 replaces it: their latest reaction is their vote."""
        async with slack_rig() as rig:
            channel, ts, _ = await answered(rig)
            await rig.react("+1", channel=channel, ts=ts, user="U1")
            await rig.react("-1", channel=channel, ts=ts, user="U1")
            assert await votes(redis, keys, rig) == (0, 1)

    async def test_what_counts_nothing(self, slack_rig: RigFactory, redis: Redis, keys: RedisKeys) -> None:
        """A 👍 on the user's own message, on a message in another channel, another emoji, the bot's
        own reactions: no vote, and only the non-votes are dropped before reaching the engine."""
        async with slack_rig() as rig:
            channel, ts, mention = await answered(rig)
            await rig.react("+1", channel=channel, ts=mention["event"]["ts"], user="U2", item_user="U1")
            await rig.react("+1", channel="C2", ts=ts, user="U2")
            await rig.react("heart", channel=channel, ts=ts, user="U2")
            await rig.react("+1", channel=channel, ts=ts, user="UBOT")
            assert await votes(redis, keys, rig) == (0, 0)
            middleware = rig.bot.middleware
            assert middleware is not None
            assert middleware.dropped == {"not_a_vote": 1, "self": 1}

    async def test_socket_mode(self, slack_rig: RigFactory, redis: Redis, keys: RedisKeys) -> None:
        """Over Socket Mode a reaction is acked and counted the same way."""
        async with FakeSlackAPI() as fake, slack_rig(fake=fake, app_token=fake.app_token) as rig:
            payload = rig.mention_payload("<@UBOT> hi")
            await fake.wait_for_ack(await fake.send_socket_event(payload))
            await rig.bot.wait_idle()
            (answer,) = fake.bot_replies("C1", payload["event"]["ts"])
            reaction = rig.reaction_payload("+1", channel="C1", ts=answer.ts, user="U1")
            await fake.wait_for_ack(await fake.send_socket_event(reaction))
            await rig.bot.wait_idle()
            assert await votes(redis, keys, rig) == (1, 0)


class TestReactionTranslation:
    """Which reactions are votes, and which reaction events pass the middleware."""

    @pytest.mark.parametrize(("name", "vote"), [
        ("+1", Vote.UP), ("thumbsup", Vote.UP), ("+1::skin-tone-6", Vote.UP),
        ("-1", Vote.DOWN), ("thumbsdown", Vote.DOWN), ("thumbsdown::skin-tone-2", Vote.DOWN),
        ("heart", None), ("eyes", None), ("thumbsup_all", None), ("", None),
    ])
    def test_vote_for(self, name: str, vote: Vote | None) -> None:
        assert vote_for(name) is vote

    def test_drop_reason(self) -> None:
        def event(**changes: Any) -> dict[str, Any]:
            body = reaction_event(reaction="+1", channel="C1", ts="1.000001", user="U1", event_id="Ev1")
            body["event"].update(changes)
            return body

        assert drop_reason(event(), ME) is None
        assert drop_reason(event(type="reaction_removed"), ME) is None
        assert drop_reason(event(item_user="U9"), ME) is None  # the engine decides what is an answer
        assert drop_reason(event(user="UBOT"), ME) == "self"
        assert drop_reason(event(reaction="tada"), ME) == "not_a_vote"
        assert drop_reason(event(item={"type": "file", "file": "F1"}), ME) == "not_a_message"
        assert drop_reason(event(item={"type": "message", "channel": "C1"}), ME) == "incomplete"
        assert drop_reason(event(reaction=7), ME) == "not_a_vote"
        other_app = event()
        other_app["api_app_id"] = "A2"
        assert drop_reason(other_app, ME) == "other_app"
