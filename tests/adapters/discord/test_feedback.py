"""👍 / 👎 on the bot's answers: counted per app ID, model and day in the usage hash, one vote per
user per answer, removing the reaction removing the vote; reactions on anything else, other emoji
and the bot's own reactions count nothing.

Unmodified discord.py against FakeDiscord (MESSAGE_REACTION_ADD / _REMOVE over the gateway), real
Redis, the fake chat API."""

from __future__ import annotations

import time
from typing import Any

import discord
import pytest
from redis.asyncio import Redis

from adapters.discord.translate import vote_of
from core.feedback import Vote
from core.redis_keys import RedisKeys
from core.usage import day_of
from tests.adapters.discord.conftest import ALICE, GENERAL, BotStarter, RunningBot, answer_chain, mention
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.discord_api import (
    INTENT_DIRECT_MESSAGE_REACTIONS,
    INTENT_GUILD_MESSAGE_REACTIONS,
    FakeDiscord,
)

A = "test/model-a"
APP_ID = "test-app-1"
UP, DOWN = "\N{THUMBS UP SIGN}", "\N{THUMBS DOWN SIGN}"
OWNER = "6000"


async def counts(redis: Redis, keys: RedisKeys, since: float) -> tuple[int, int]:
    """(👍, 👎) on model A's answers, summed over the UTC days since `since` (a test may span midnight)."""
    up = down = 0
    for day in {day_of(since), day_of(time.time())}:
        fields = await redis.hmget(keys.usage(APP_ID, day), [f"{A}|feedback_up", f"{A}|feedback_down"])
        up += int(fields[0] or 0)
        down += int(fields[1] or 0)
    return up, down


async def react(
    fake: FakeDiscord, running: RunningBot, channel: str, message: dict[str, Any], emoji: str, *,
    user: dict[str, Any] | None = None, added: bool = True,
) -> str:
    """Send one reaction event and wait for what the bot made of it."""
    seen = len(running.reactions.by_id.get(int(message["id"]), []))
    await fake.send_reaction(channel_id=channel, message_id=message["id"], emoji=emoji, user=user, added=added)
    return (await running.reactions.all_of(message["id"], seen + 1))[seen]


async def answered(fake: FakeDiscord, running: RunningBot, channel: str, text: str) -> tuple[dict[str, Any],
                                                                                         dict[str, Any]]:
    """The question (a mention) and the bot's one-part answer to it."""
    question = await fake.send_message_create(channel_id=channel, content=text, mentions=mention(fake))
    assert await running.outcomes.of(question["id"]) == "answered"
    [answer] = answer_chain(fake, channel, question["id"])
    return question, answer


class TestVotes:
    """Votes on a real answer in a guild channel."""

    async def test_votes_count_once_per_user_and_removal_undoes(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys,
    ) -> None:
        """👍 counts; the same 👍 delivered twice counts once; a second user's 👎 counts; removing
        the 👍 takes it back; a reaction on the user's own question counts nothing."""
        since = time.time()
        chat_api.script(A, Behaviour(text="Forty-two."))
        running = await start_bot()
        assert fake.identifies[-1]["intents"] & INTENT_GUILD_MESSAGE_REACTIONS
        assert fake.identifies[-1]["intents"] & INTENT_DIRECT_MESSAGE_REACTIONS
        question, answer = await answered(fake, running, GENERAL, "<@1000> the answer?")

        assert await react(fake, running, GENERAL, answer, UP) == "recorded"
        assert await counts(redis, keys, since) == (1, 0)
        assert await react(fake, running, GENERAL, answer, UP) == "unchanged"  # a replayed event
        assert await counts(redis, keys, since) == (1, 0)

        owner = fake.human(OWNER, "owner")
        assert await react(fake, running, GENERAL, answer, DOWN, user=owner) == "recorded"
        assert await counts(redis, keys, since) == (1, 1)

        assert await react(fake, running, GENERAL, answer, UP, added=False) == "removed"
        assert await counts(redis, keys, since) == (0, 1)

        assert await react(fake, running, GENERAL, question, UP) == "not_an_answer"
        assert await react(fake, running, GENERAL, question, UP, added=False) == "not_an_answer"
        assert await counts(redis, keys, since) == (0, 1)

    async def test_skin_tones_count_and_other_emoji_do_not(
        self, fake: FakeDiscord, start_bot: BotStarter, redis: Redis, keys: RedisKeys
    ) -> None:
        """👍🏽 is 👍; 🎉, a custom emoji named like a thumb and the bot's own 👍 count nothing."""
        since = time.time()
        running = await start_bot()
        _, answer = await answered(fake, running, GENERAL, "<@1000> hi")
        assert await react(fake, running, GENERAL, answer, "\N{PARTY POPPER}") == "ignored_emoji"
        seen = len(running.reactions.by_id.get(int(answer["id"]), []))
        await fake.send_reaction(channel_id=GENERAL, message_id=answer["id"], emoji="thumbsup", emoji_id="777")
        assert (await running.reactions.all_of(answer["id"], seen + 1))[seen] == "ignored_emoji"
        assert await react(fake, running, GENERAL, answer, UP, user=fake.bot_user) == "ignored_bot"
        assert await counts(redis, keys, since) == (0, 0)
        assert await react(fake, running, GENERAL, answer, UP + "\N{EMOJI MODIFIER FITZPATRICK TYPE-4}") \
            == "recorded"
        assert await counts(redis, keys, since) == (1, 0)

    async def test_votes_in_a_dm(
        self, fake: FakeDiscord, start_bot: BotStarter, redis: Redis, keys: RedisKeys
    ) -> None:
        """A DM answer can be voted on too (the DM reactions intent)."""
        since = time.time()
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        question = await fake.send_message_create(channel_id=dm, content="hi")
        assert await running.outcomes.of(question["id"]) == "answered"
        [answer] = fake.bot_messages(dm)
        assert await react(fake, running, dm, answer, DOWN) == "recorded"
        assert await counts(redis, keys, since) == (0, 1)


@pytest.mark.parametrize(("name", "vote"), [
    ("\N{THUMBS UP SIGN}", Vote.UP),
    ("\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-1-2}", Vote.UP),
    ("\N{THUMBS DOWN SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-6}", Vote.DOWN),
    ("\N{THUMBS DOWN SIGN}\ufe0f", Vote.DOWN),
    ("\N{OK HAND SIGN}", None),
    ("\N{THUMBS UP SIGN}\N{THUMBS UP SIGN}", None),
])
def test_vote_of(name: str, vote: Vote | None) -> None:
    assert vote_of(discord.PartialEmoji(name=name)) is vote
