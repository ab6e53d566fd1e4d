"""Allow and deny lists end to end: who is answered where, and a refusal said once.

The guild here has bob (5001), who holds the moderator role (4000); alice (5000) holds none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest

from adapters.discord.access import REFUSED_CHANNEL, REFUSED_DM, REFUSED_USER, AccessPolicy
from tests.adapters.discord.conftest import (
    ALICE,
    BOT_CHAT,
    CATEGORY,
    GENERAL,
    THREAD,
    BotStarter,
    answer_chain,
    mention,
)
from tests.fakes.chat_api import FakeChatAPI
from tests.fakes.discord_api import FakeDiscord, RoleSpec, default_guild, point_discord_py_at

BOB = "5001"
MODERATOR_ROLE = 4000


def bob() -> dict[str, Any]:
    return {"id": BOB, "username": "bob", "discriminator": "0", "global_name": "Bob", "avatar": None}


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The default guild plus bob, a moderator."""
    guild = default_guild()
    guild.members.append({"user": bob(), "roles": [str(MODERATOR_ROLE)]})
    async with FakeDiscord(guilds=[guild]) as server:
        restore = point_discord_py_at(server)
        try:
            yield server
        finally:
            restore()


async def ask(fake: FakeDiscord, channel: str, *, author: dict[str, Any] | None = None) -> dict[str, Any]:
    return await fake.send_message_create(channel_id=channel, content="<@1000> hello", author=author,
                                          mentions=mention(fake))


class TestUsers:
    """User and role lists."""

    async def test_denied_user_is_refused_once(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """The first refusal is a short reply; the next message from that user gets silence."""
        running = await start_bot(access=AccessPolicy(denied_users=frozenset({int(ALICE)})))
        first = await ask(fake, GENERAL)
        assert await running.outcomes.of(first["id"]) == "refused"
        assert [m["content"] for m in answer_chain(fake, GENERAL, first["id"])] == [REFUSED_USER]
        again = await ask(fake, GENERAL)
        assert await running.outcomes.of(again["id"]) == "refused_quietly"
        assert len(fake.bot_messages(GENERAL)) == 1
        other = await ask(fake, GENERAL, author=bob())
        assert await running.outcomes.of(other["id"]) == "answered"
        assert len(chat_api.requests) == 1

    async def test_allowed_role_admits_its_holders_only(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """`allowed_roles`: bob (moderator) is answered, alice is refused."""
        running = await start_bot(access=AccessPolicy(allowed_roles=frozenset({MODERATOR_ROLE})))
        from_bob = await ask(fake, GENERAL, author=bob())
        assert await running.outcomes.of(from_bob["id"]) == "answered"
        from_alice = await ask(fake, GENERAL)
        assert await running.outcomes.of(from_alice["id"]) == "refused"
        assert [r.body["messages"][-1]["content"] for r in chat_api.requests if r.body] == ["[Bob] hello"]

    async def test_denied_role_wins_over_allowed_user(
        self, fake: FakeDiscord, start_bot: BotStarter
    ) -> None:
        """Deny lists beat allow lists."""
        running = await start_bot(access=AccessPolicy(allowed_users=frozenset({int(BOB)}),
                                                      denied_roles=frozenset({MODERATOR_ROLE})))
        sent = await ask(fake, GENERAL, author=bob())
        assert await running.outcomes.of(sent["id"]) == "refused"


class TestChannels:
    """Channel lists match threads in a channel and channels in a category."""

    async def test_allowed_category_admits_its_channels(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """Allowing the "Bots" category allows #bot-chat in it, not #general."""
        running = await start_bot(access=AccessPolicy(allowed_channels=frozenset({int(CATEGORY)})))
        inside = await ask(fake, BOT_CHAT)
        assert await running.outcomes.of(inside["id"]) == "answered"
        outside = await ask(fake, GENERAL)
        assert await running.outcomes.of(outside["id"]) == "refused"
        assert [m["content"] for m in answer_chain(fake, GENERAL, outside["id"])] == [REFUSED_CHANNEL]

    async def test_denied_channel_covers_its_threads(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """Denying #general also refuses in the thread inside it."""
        running = await start_bot(access=AccessPolicy(denied_channels=frozenset({int(GENERAL)})))
        in_thread = await ask(fake, THREAD)
        assert await running.outcomes.of(in_thread["id"]) == "refused"
        elsewhere = await ask(fake, BOT_CHAT)
        assert await running.outcomes.of(elsewhere["id"]) == "answered"


class TestDirectMessages:
    """`allow_dms`."""

    async def test_dms_refused_when_not_allowed(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """With allow_dms = false a DM gets one short note (not a reply) and no answer."""
        running = await start_bot(access=AccessPolicy(allow_dms=False))
        dm = fake.dm_channel_id(ALICE)
        sent = await fake.send_message_create(channel_id=dm, content="hi")
        assert await running.outcomes.of(sent["id"]) == "refused"
        [note] = fake.bot_messages(dm)
        assert note["content"] == REFUSED_DM and note.get("message_reference") is None
        assert chat_api.requests == []


class TestPermissions:
    """A bot that may not answer in a channel does not ask the model."""

    @pytest.mark.parametrize("permissions", [
        discord.Permissions(view_channel=True, read_message_history=True),  # may not send
        # May send but not read history, so not reply: Discord would refuse the answer (160002).
        discord.Permissions(view_channel=True, send_messages=True, send_messages_in_threads=True),
    ], ids=["no_send", "no_history"])
    async def test_muted_bot_stays_quiet(
        self, start_bot: BotStarter, chat_api: FakeChatAPI, permissions: discord.Permissions
    ) -> None:
        """@everyone lacks a permission an answer needs: the mention is dropped before any model
        call or refused request, while DMs (no guild permissions) are still answered."""
        guild = default_guild()
        guild.roles = [RoleSpec(id=guild.id, name="@everyone", permissions=permissions.value)]
        async with FakeDiscord(guilds=[guild]) as muted:
            restore = point_discord_py_at(muted)
            try:
                running = await start_bot()
                sent = await ask(muted, GENERAL)
                assert await running.outcomes.of(sent["id"]) == "ignored_cannot_send"
                dm = muted.dm_channel_id(ALICE)  # DMs need no guild permission
                in_dm = await muted.send_message_create(channel_id=dm, content="hi")
                assert await running.outcomes.of(in_dm["id"]) == "answered"
                assert len(chat_api.requests) == 1
                assert not [c for c in muted.calls if c.status >= 400]
            finally:
                await running.bot.stop()
                restore()
