"""The adapter's pure rules, without a gateway: mention stripping, conversation keys, access lists,
footers, which 429s count, the per-channel pacer's arithmetic and shutdown, and token redaction."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

import pytest

from adapters.discord.access import AccessPolicy, Place, Refusal, Sender, in_channels
from adapters.discord.config import FooterSettings
from adapters.discord.pacing import MAX_SLOWDOWN, SLOWDOWN_RECOVERY_S, ChannelPacer, rate_limited_channel
from adapters.discord.redaction import REDACTED, redact_tokens
from adapters.discord.sink import footer_text
from adapters.discord.translate import (
    Addressed,
    channel_conversation,
    command_conversation,
    conversation_for,
    persona_set_commands,
    persona_unset_command,
    strip_mentions,
)
from core.types import ConversationKey, ReplyInfo

BOT = 1000
GENERAL = Place(guild_id=2000, channel_id=3000, category_id=None)
IN_CATEGORY = Place(guild_id=2000, channel_id=3001, category_id=2999)
THREAD = Place(guild_id=2000, channel_id=3100, parent_id=3000, category_id=None, is_thread=True)
THREAD_IN_CATEGORY = Place(guild_id=2000, channel_id=3101, parent_id=3001, category_id=2999, is_thread=True)
DM = Place(guild_id=None, channel_id=9000)
ALICE = Sender(user_id=5000, display_name="Alice")
MODERATOR = Sender(user_id=5001, display_name="Bob", role_ids=frozenset({4000}))


class TestStripMentions:
    """The model never sees the bot's mention; everything else survives."""

    @pytest.mark.parametrize(("content", "expected"), [
        ("<@1000> hi", "hi"),
        ("<@!1000> hi", "hi"),
        ("hey <@1000> there", "hey there"),
        ("hi <@1000>", "hi"),
        ("<@&1234> role-mentioned", "role-mentioned"),
        ("<@1000>\n```py\nx = 1\n```", "```py\nx = 1\n```"),
        ("ask <@6000> about it <@1000>", "ask <@6000> about it"),
        ("<@1000>", ""),
        ("no mention at all", "no mention at all"),
    ])
    def test_strip(self, content: str, expected: str) -> None:
        """The bot's user and role mentions go; line breaks and other users' mentions stay."""
        assert strip_mentions(content, frozenset({BOT, 1234})) == expected


class TestConversationKeys:
    """DM, thread, reply chain, whole channel."""

    def test_dm_is_its_channel(self) -> None:
        """Every DM message is one conversation, whatever it replies to."""
        addressed = Addressed("dm", "hi", replied_to=77)
        assert conversation_for(DM, addressed, 1, shared=False, continued=None) == ConversationKey(
            "discord", "dm", "9000")

    def test_thread_is_the_thread(self) -> None:
        """In a thread a reply or a new mention alike belong to the thread."""
        for addressed in (Addressed("mention", "hi", None), Addressed("reply", "hi", 5, fallback_root=4)):
            assert conversation_for(THREAD, addressed, 1, shared=False, continued=None) == \
                ConversationKey("discord", "2000", "3100")

    def test_plain_mention_roots_a_chain(self) -> None:
        """A mention in a channel starts a chain rooted at that very message."""
        key = conversation_for(GENERAL, Addressed("mention", "hi", None), 42, shared=False, continued=None)
        assert key == ConversationKey("discord", "2000", "3000", "42")

    def test_index_wins_over_the_event(self) -> None:
        """A reply continues what the message index remembered for the replied-to message."""
        known = ConversationKey("discord", "2000", "3000", "10")
        addressed = Addressed("reply", "more", replied_to=30, fallback_root=20)
        assert conversation_for(GENERAL, addressed, 40, shared=False, continued=known) == known

    def test_event_fallback_without_the_index(self) -> None:
        """Unknown to the index: the bot message's own reference roots the chain."""
        addressed = Addressed("reply", "more", replied_to=30, fallback_root=20)
        assert conversation_for(GENERAL, addressed, 40, shared=False, continued=None) == \
            ConversationKey("discord", "2000", "3000", "20")

    def test_remembered_chain_of_another_channel_is_ignored(self) -> None:
        """A conversation from another channel never leaks into this one."""
        elsewhere = ConversationKey("discord", "2000", "3001", "10")
        key = conversation_for(GENERAL, Addressed("mention", "x", 9), 40, shared=False, continued=elsewhere)
        assert key == ConversationKey("discord", "2000", "3000", "40")

    def test_whole_channel(self) -> None:
        """Where the bot answers everything, the channel is the conversation."""
        key = conversation_for(GENERAL, Addressed("channel", "x", None), 40, shared=True, continued=None)
        assert key == ConversationKey("discord", "2000", "3000")

    def test_shared_channel_ignores_the_chain(self) -> None:
        """In a `channel_memory` channel a mention, even a reply to a known chain, is the channel's."""
        known = ConversationKey("discord", "2000", "3000", "10")
        key = conversation_for(GENERAL, Addressed("mention", "x", 9), 40, shared=True, continued=known)
        assert key == ConversationKey("discord", "2000", "3000") == channel_conversation(GENERAL)
        assert command_conversation(GENERAL, shared=True, latest=known) == channel_conversation(GENERAL)
        assert channel_conversation(DM) == ConversationKey("discord", "dm", "9000")

    def test_commands(self) -> None:
        """A command in a DM or thread means that conversation; in a channel the latest chain, if any."""
        latest = ConversationKey("discord", "2000", "3000", "10")
        assert command_conversation(DM, shared=False, latest=None) == ConversationKey("discord", "dm", "9000")
        assert command_conversation(THREAD, shared=False, latest=latest) == ConversationKey(
            "discord", "2000", "3100")
        assert command_conversation(GENERAL, shared=False, latest=latest) == latest
        assert command_conversation(GENERAL, shared=False, latest=None) is None


class TestAccessPolicy:
    """Deny beats allow; a channel entry covers its threads and a category its channels."""

    def test_open_by_default(self) -> None:
        """No lists: everyone, everywhere, DMs included."""
        for place in (GENERAL, THREAD, DM):
            assert AccessPolicy().check(ALICE, place) is None

    def test_channel_entry_matches_threads_and_category(self) -> None:
        """An entry for a channel covers its threads; an entry for a category, its channels' threads too."""
        assert in_channels(THREAD, frozenset({3000}))
        assert in_channels(THREAD_IN_CATEGORY, frozenset({2999}))
        assert not in_channels(GENERAL, frozenset({2999}))

    def test_lists(self) -> None:
        """Each list, and the order they apply in."""
        assert AccessPolicy(denied_users=frozenset({5000})).check(ALICE, GENERAL) is Refusal.USER
        assert AccessPolicy(allowed_users=frozenset({1})).check(ALICE, GENERAL) is Refusal.USER
        assert AccessPolicy(allowed_roles=frozenset({4000})).check(MODERATOR, GENERAL) is None
        assert AccessPolicy(allowed_roles=frozenset({4000})).check(ALICE, GENERAL) is Refusal.USER
        assert AccessPolicy(allowed_users=frozenset({5001}), denied_roles=frozenset({4000})).check(
            MODERATOR, GENERAL) is Refusal.USER
        assert AccessPolicy(allowed_channels=frozenset({2999})).check(ALICE, THREAD_IN_CATEGORY) is None
        assert AccessPolicy(allowed_channels=frozenset({2999})).check(ALICE, GENERAL) is Refusal.CHANNEL
        assert AccessPolicy(denied_channels=frozenset({3000})).check(ALICE, THREAD) is Refusal.CHANNEL

    def test_dms(self) -> None:
        """Channel lists do not apply to DMs; allow_dms does; a role-only admission fails there."""
        assert AccessPolicy(allowed_channels=frozenset({3000})).check(ALICE, DM) is None
        assert AccessPolicy(allow_dms=False).check(ALICE, DM) is Refusal.DM
        dm_moderator = Sender(user_id=5001, display_name="Bob")  # no roles outside a guild
        assert AccessPolicy(allowed_roles=frozenset({4000})).check(dm_moderator, DM) is Refusal.USER


class TestFooter:
    """What the footer says under each setting."""

    @pytest.mark.parametrize(("info", "settings", "expected"), [
        (ReplyInfo("m", False, False, False), FooterSettings(), None),
        (ReplyInfo("m", True, False, False), FooterSettings(), "-# answered by a fallback model"),
        (ReplyInfo("m", True, False, False), FooterSettings(show_model=True), "-# answered by fallback model `m`"),
        (ReplyInfo("m", True, False, False), FooterSettings(show_fallback=False), None),
        (ReplyInfo("m", False, True, False), FooterSettings(),
         "-# older messages were left out to fit the model's context"),
        (ReplyInfo("m", False, True, False), FooterSettings(show_trimmed=False), None),
        (ReplyInfo("m", False, True, False), FooterSettings(show_model=True),
         "-# model: `m` · older messages were left out to fit the model's context"),
    ])
    def test_footer(self, info: ReplyInfo, settings: FooterSettings, expected: str | None) -> None:
        """Off for the model name by default; on for fallbacks and trimmed context."""
        assert footer_text(info, settings) == expected


class TestRateLimitDetection:
    """Only 429s on a channel's message routes slow that channel."""

    @pytest.mark.parametrize(("method", "path", "status", "expected"), [
        ("PATCH", "/api/v10/channels/3000/messages/42", 429, 3000),
        ("POST", "/api/v10/channels/3000/messages", 429, 3000),
        ("PATCH", "/api/v10/channels/3000/messages/42", 200, None),
        ("POST", "/api/v10/channels/3000/typing", 429, None),
        ("GET", "/api/v10/channels/3000/messages/42", 429, None),
        ("PATCH", "/api/v10/webhooks/1/tok/messages/@original", 429, None),
    ])
    def test_detection(self, method: str, path: str, status: int, expected: int | None) -> None:
        """The channel id of a rate-limited post or edit, else None."""
        assert rate_limited_channel(method, path, status) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestChannelPacer:
    """Spacing, slow-down after repeated 429s, and recovery."""

    async def test_edits_in_one_channel_take_turns(self) -> None:
        """Edits in one channel run one at a time, each starting an interval after the previous one
        ended."""
        pacer = ChannelPacer(0.05)
        spans: list[tuple[float, float]] = []

        async def edit(channel: int) -> None:
            async with pacer.turn(channel):
                started = time.monotonic()
                await asyncio.sleep(0.01)  # the request's own duration
                spans.append((started, time.monotonic()))

        await asyncio.gather(*(edit(1) for _ in range(3)))
        assert all(b[0] - a[1] >= 0.05 for a, b in pairwise(spans))

    async def test_another_channel_does_not_wait(self) -> None:
        """While one channel's next edit waits out its interval, another channel's edit goes first."""
        pacer = ChannelPacer(60.0)  # a channel that just edited waits a minute
        async with pacer.turn(1):
            pass
        order: list[int] = []

        async def edit(channel: int) -> None:
            async with pacer.turn(channel):
                order.append(channel)

        waiting = asyncio.create_task(edit(1))
        await asyncio.sleep(0)  # channel 1's edit is now waiting for its turn
        await edit(2)
        assert order == [2] and not waiting.done()
        pacer.drain()  # shutdown lifts the spacing: channel 1's edit goes at once
        await waiting
        assert order == [2, 1]

    def test_repeated_429s_slow_down_then_recover(self) -> None:
        """One 429 is noise; two double the spacing, up to the cap; quiet periods halve it back."""
        clock = FakeClock()
        pacer = ChannelPacer(1.2, clock=clock)
        pacer.note_rate_limited(7)
        assert pacer.slowdown(7) == 1.0
        pacer.note_rate_limited(7)
        assert pacer.slowdown(7) == 2.0
        for _ in range(6):
            pacer.note_rate_limited(7)
        assert pacer.slowdown(7) == MAX_SLOWDOWN
        assert pacer.slowdown(8) == 1.0  # other channels are unaffected
        clock.now += SLOWDOWN_RECOVERY_S
        assert pacer.slowdown(7) == MAX_SLOWDOWN / 2
        clock.now += SLOWDOWN_RECOVERY_S
        assert pacer.slowdown(7) == 1.0

    async def test_drain_lifts_the_spacing(self) -> None:
        """At shutdown an edit waiting out the interval goes at once, and later edits do not wait."""
        pacer = ChannelPacer(60.0)  # an interval no test could sit out
        async with pacer.turn(1):
            pass
        edited = asyncio.Event()

        async def edit() -> None:
            async with pacer.turn(1):
                edited.set()

        waiting = asyncio.create_task(edit())
        await asyncio.sleep(0)  # one turn of the loop (not a wait for a result): it starts waiting
        assert not edited.is_set()
        pacer.drain()
        await asyncio.wait_for(waiting, 1.0)
        async with asyncio.timeout(1.0), pacer.turn(1):
            assert pacer.draining

    def test_strikes_far_apart_do_not_count_as_repeated(self) -> None:
        """Two 429s minutes apart leave the spacing alone."""
        clock = FakeClock()
        pacer = ChannelPacer(1.2, clock=clock)
        pacer.note_rate_limited(7)
        clock.now += 120
        pacer.note_rate_limited(7)
        assert pacer.slowdown(7) == 1.0


class TestTokenRedaction:
    """Interaction tokens are cut out of URLs and printed payloads; nothing else changes."""

    @pytest.mark.parametrize(("line", "expected"), [
        ("PATCH http://x/api/v10/webhooks/1000/aW50ZXJhY3Rpb246MTIz.abc-_/messages/@original has returned 200",
         f"PATCH http://x/api/v10/webhooks/1000/{REDACTED}/messages/@original has returned 200"),
        ("POST https://discord.com/api/v10/interactions/42/tok3n/callback?with_response=1",
         f"POST https://discord.com/api/v10/interactions/42/{REDACTED}/callback?with_response=1"),
        ("WebSocket Event: {'t': 'INTERACTION_CREATE', 'd': {'token': 'secret-ish', 'id': '42'}}",
         f"WebSocket Event: {{'t': 'INTERACTION_CREATE', 'd': {{'token': '{REDACTED}', 'id': '42'}}}}"),
        ('{"token": "abc", "type": 2}', f'{{"token": "{REDACTED}", "type": 2}}'),
        ("PATCH /channels/3000/messages/42 has returned 200", "PATCH /channels/3000/messages/42 has returned 200"),
    ])
    def test_redact(self, line: str, expected: str) -> None:
        """Webhook and interaction paths, dict and JSON payloads; other routes untouched."""
        assert redact_tokens(line) == expected


class TestPersonaOptions:
    """`/persona` options as the core's command words."""

    def test_set(self) -> None:
        """One command per option given, model first; blank options are not given."""
        assert persona_set_commands(model=None, fallbacks=None, prompt=None) == []
        assert persona_set_commands(model=" m ", fallbacks="a, b", prompt="Be  brief.") == [
            "set model m", "set fallbacks a, b", "set prompt Be  brief."]
        assert persona_set_commands(model="", fallbacks="none", prompt=None) == ["set fallbacks none"]

    def test_unset(self) -> None:
        assert persona_unset_command("all") == "unset all"
