"""Files sent to the bot: an image reaches the model as a content part (with `vision`), a text file
is inlined, anything else gets a note and the answer still comes; history keeps a reference, never
the bytes. The files are downloaded from the fake Discord's signed attachment URLs, bounded by the
bot's limit.

Unmodified discord.py against FakeDiscord, real Redis, the fake chat API."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.discord.files import DownloadFailed, FileDownloader
from core.profile import AttachmentLimits
from core.redis_keys import RedisKeys
from core.types import ConversationKey
from tests.adapters.discord.conftest import (
    ALICE,
    GENERAL,
    GUILD,
    BotStarter,
    answer_chain,
    mention,
)
from tests.conftest import EngineFactory
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.discord_api import FakeDiscord

A = "test/model-a"
# The 8-byte PNG signature and an IHDR chunk start: enough for a content type check, never decoded.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))
VISION = AttachmentLimits(vision=True)


def last_user_message(chat_api: FakeChatAPI) -> dict[str, Any]:
    body = chat_api.requests[-1].body
    assert body is not None
    message: dict[str, Any] = body["messages"][-1]
    assert message["role"] == "user"
    return message


async def history_contents(redis: Redis, keys: RedisKeys, conversation: ConversationKey) -> list[str]:
    raw = await redis.lrange(keys.history("testbot", conversation), 0, -1)
    return [json.loads(turn)["content"] for turn in raw]


class TestImages:
    """Images, with and without `vision`."""

    async def test_an_image_alone_reaches_the_model_as_an_image_part(
        self, fake: FakeDiscord, start_bot: BotStarter, make_engine: EngineFactory,
        chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys,
    ) -> None:
        """"@bot" with only an image (no text) is a question, not `help`: the image is downloaded
        from its attachment URL on the fake and sent as a `data:` URL; history says `[image: …]`."""
        chat_api.script(A, Behaviour(text="A cat."))
        running = await start_bot(engine=make_engine(platform="discord", attachments=VISION))
        image = fake.attachment("cat.png", PNG, content_type="image/png", channel_id=GENERAL)
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000>", mentions=mention(fake),
                                              attachments=[image])
        assert await running.outcomes.of(sent["id"]) == "answered"
        assert [m["content"] for m in answer_chain(fake, GENERAL, sent["id"])] == ["A cat."]
        assert fake.attachment_downloads == [f"/attachments/{GENERAL}/{image['id']}/cat.png"]

        content = last_user_message(chat_api)["content"]
        assert isinstance(content, list)
        image_parts = [p for p in content if p["type"] == "image_url"]
        assert image_parts == [{"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}]
        history = await history_contents(redis, keys, ConversationKey("discord", GUILD, GENERAL, sent["id"]))
        assert history[0].endswith("[image: cat.png]") and "base64" not in history[0]
        assert history[1] == "A cat."

    async def test_without_vision_an_image_gets_a_note(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """The default: the image is not downloaded, the model gets the text, the answer a note."""
        chat_api.script(A, Behaviour(text="I see text only."))
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        image = fake.attachment("cat.png", PNG, content_type="image/png", channel_id=dm)
        sent = await fake.send_message_create(channel_id=dm, content="what is this?", attachments=[image])
        assert await running.outcomes.of(sent["id"]) == "answered"
        assert fake.attachment_downloads == []
        assert last_user_message(chat_api)["content"] == "what is this?"
        [answer] = fake.bot_messages(dm)
        assert answer["content"].startswith("I see text only.")
        assert "skipped `cat.png`: this bot doesn't look at images" in answer["content"]


class TestOtherFiles:
    """Text files are read; other files are named in a note."""

    async def test_a_text_file_is_inlined(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, redis: Redis,
        keys: RedisKeys,
    ) -> None:
        """A DM with a text file: its text follows the question, in the request and in history."""
        chat_api.script(A, Behaviour(text="It says hello."))
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        notes = fake.attachment("notes.txt", b"hello from the file", content_type="text/plain; charset=utf-8",
                                channel_id=dm)
        sent = await fake.send_message_create(channel_id=dm, content="summarise", attachments=[notes])
        assert await running.outcomes.of(sent["id"]) == "answered"
        content = last_user_message(chat_api)["content"]
        assert isinstance(content, str)
        assert content.startswith("summarise\n\n[file: notes.txt]") and "hello from the file" in content
        [user_turn, _] = await history_contents(redis, keys, ConversationKey("discord", "dm", dm))
        assert user_turn == content

    async def test_a_file_alone_in_a_dm_is_a_question(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """No text, only a file: the model gets the file (not the help text)."""
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        code = fake.attachment("main.py", b"print('hi')", channel_id=dm)  # no content type: by the name
        sent = await fake.send_message_create(channel_id=dm, content="", attachments=[code])
        assert await running.outcomes.of(sent["id"]) == "answered"
        assert last_user_message(chat_api)["content"] == "[file: main.py]\n```\nprint('hi')\n```"

    async def test_an_unsupported_file_gets_a_note_and_the_answer_still_comes(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """A zip beside a question: not downloaded, named in a note under the answer."""
        chat_api.script(A, Behaviour(text="Here is my answer."))
        running = await start_bot()
        archive = fake.attachment("stuff.zip", b"PK\x03\x04", content_type="application/zip", channel_id=GENERAL)
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> what's inside?",
                                              mentions=mention(fake), attachments=[archive])
        assert await running.outcomes.of(sent["id"]) == "answered"
        [answer] = answer_chain(fake, GENERAL, sent["id"])
        assert answer["content"].startswith("Here is my answer.")
        assert "skipped `stuff.zip`: I can't read application/zip files" in answer["content"]
        assert fake.attachment_downloads == []
        assert last_user_message(chat_api)["content"] == "[Alice] what's inside?"

    async def test_a_file_larger_than_reported_is_cut_at_the_limit(
        self, fake: FakeDiscord, start_bot: BotStarter, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """A file whose reported size is within the limit but whose download is not: refused with a
        note giving the size read, one byte past the limit (so never downloaded whole)."""
        chat_api.script(A, Behaviour(text="Fine."))
        limits = AttachmentLimits(max_file_bytes=2_000)
        running = await start_bot(engine=make_engine(platform="discord", attachments=limits))
        dm = fake.dm_channel_id(ALICE)
        big = fake.attachment("big.txt", b"x" * 50_000, content_type="text/plain", channel_id=dm, size=100)
        sent = await fake.send_message_create(channel_id=dm, content="read this", attachments=[big])
        assert await running.outcomes.of(sent["id"]) == "answered"
        [answer] = fake.bot_messages(dm)
        assert "skipped `big.txt`: it is 2 KB, over this bot's 2 KB limit per file" in answer["content"]
        assert last_user_message(chat_api)["content"] == "read this"


class TestDownloader:
    """`FileDownloader` itself."""

    async def test_reads_at_most_one_byte_past_the_limit(self, fake: FakeDiscord) -> None:
        """However much the URL serves; a missing file is an error, not empty bytes."""
        downloader = FileDownloader()
        try:
            big = fake.attachment("big.bin", b"y" * 300_000, channel_id=GENERAL)
            assert await downloader.read(big["url"], max_bytes=1_000) == b"y" * 1_001
            small = fake.attachment("small.bin", b"tiny", channel_id=GENERAL)
            assert await downloader.read(small["url"], max_bytes=1_000) == b"tiny"
            with pytest.raises(DownloadFailed, match="HTTP 404"):  # unsigned, like an expired URL
                await downloader.read(big["url"].split("?")[0], max_bytes=1_000)
        finally:
            await downloader.close()
