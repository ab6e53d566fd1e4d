"""Files sent to a Slack bot: downloaded from `url_private_download` with the bot token, images to the
model as content parts (with `vision`), text files inlined, anything refused noted in the reply —
and never the token to a host that is not Slack's, never a crash.

Real slack-bolt over HTTP mode against FakeSlackAPI (which serves the files), real Redis, the fake
chat API (which records the content parts).
"""

from __future__ import annotations

import base64
from typing import Any, cast

import aiohttp
import pytest
from redis.asyncio import Redis
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.files import FileUnavailable, SlackFiles, slack_host
from adapters.slack.translate import SlackFile
from core.profile import AttachmentLimits
from core.redis_keys import RedisKeys
from core.types import ConversationKey, Turn
from tests.adapters.slack.conftest import MODEL_A, RigFactory, SlackRig
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import FakeSlackAPI

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # bytes enough to stand for an image
VISION = {"attachments": AttachmentLimits(vision=True)}


def last_user_content(chat_api: FakeChatAPI, index: int = -1) -> Any:
    body = chat_api.requests[index].body
    assert body is not None
    return body["messages"][-1]["content"]


def thread_of(payload: dict[str, Any]) -> str:
    event = payload["event"]
    return str(event.get("thread_ts") or event["ts"])


async def stored_turns(redis: Redis, keys: RedisKeys, rig: SlackRig, payload: dict[str, Any]) -> list[Turn]:
    event = payload["event"]
    key = ConversationKey("slack", rig.fake.team_id, event["channel"], thread_of(payload))
    raw = await redis.lrange(keys.history(rig.engine.profile.name, key), 0, -1)
    return [turn for turn in (Turn.from_json(r) for r in raw) if turn is not None]


class TestImages:
    """An image reaches a vision bot's model as an `image_url` part, the turn it was sent."""

    async def test_image_is_a_content_part_and_history_keeps_a_reference(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """Downloaded with `Authorization: Bearer <bot token>`, sent as a data URL after the text;
        history keeps `[image: chart.png]`, so the next turn's request carries no image."""
        async with slack_rig(profile=VISION) as rig:
            image = rig.fake.add_file("chart.png", PNG, mimetype="image/png")
            payload = await rig.mention("<@UBOT> what does this chart show?", files=[image])
            (download,) = rig.fake.downloads_of(image["id"])
            assert download.authorization == f"Bearer {rig.fake.bot_token}" and download.served
            assert download.path.endswith("/download/chart.png")  # url_private_download first
            text_part, image_part = last_user_content(chat_api)
            assert text_part == {"type": "text", "text": "[useru1] what does this chart show?"}
            assert image_part == {"type": "image_url", "image_url": {
                "url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}
            assert len(rig.replies(payload)) == 1
            user_turn = (await stored_turns(redis, keys, rig, payload))[0]
            assert user_turn.content == "what does this chart show?\n\n[image: chart.png]"

            await rig.mention("<@UBOT> and the trend?", thread_ts=thread_of(payload))
            body = chat_api.requests[-1].body
            assert body is not None
            assert all(isinstance(m["content"], str) for m in body["messages"])
            assert "[image: chart.png]" in body["messages"][1]["content"]
            assert len(rig.fake.downloads_of(image["id"])) == 1

    async def test_without_vision_the_image_is_noted_not_sent(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """The default bot does not look at images: not even downloaded, one note, the answer comes."""
        chat_api.script(MODEL_A, Behaviour(text="I only read text."))
        async with slack_rig() as rig:
            image = rig.fake.add_file("cat.jpg", PNG, mimetype="image/jpeg")
            payload = await rig.mention("<@UBOT> cute?", files=[image])
            assert rig.fake.downloads_of(image["id"]) == []
            assert isinstance(last_user_content(chat_api), str)
            (reply,) = rig.replies(payload)
            assert reply.startswith("I only read text.") and "skipped `cat.jpg`" in reply

    async def test_a_sign_in_page_is_never_taken_for_the_image(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A token without files:read gets Slack's HTML sign-in page: the image is noted as not
        downloaded, and no HTML reaches the model as `image/png`."""
        async with slack_rig(profile=VISION) as rig:
            rig.fake.files_read_scope = False
            image = rig.fake.add_file("chart.png", PNG, mimetype="image/png")
            payload = await rig.mention("<@UBOT> look", files=[image])
            assert isinstance(last_user_content(chat_api), str)
            (reply,) = rig.replies(payload)
            assert "skipped `chart.png`: I couldn't download it" in reply


class TestFileOnlyMessages:
    """A file with no words is a question about the file, not a request for help."""

    async def test_file_only_dm_reaches_the_model(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """A DM that is only a Markdown file: the model reads the file inlined."""
        async with slack_rig() as rig:
            notes = rig.fake.add_file("notes.md", b"# Plan\n- ship it", mimetype="text/markdown")
            payload = await rig.message("", files=[notes])
            assert last_user_content(chat_api) == "[file: notes.md]\n```\n# Plan\n- ship it\n```"
            assert rig.replies(payload) and rig.replies(payload) != [rig.engine.help_text()]

    async def test_file_only_mention_and_thread_follow_up(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A bare mention with a file is answered; so is a wordless file in a thread the bot talks in."""
        async with slack_rig() as rig:
            first = rig.fake.add_file("a.txt", b"alpha", mimetype="text/plain")
            payload = await rig.mention("<@UBOT>", files=[first])
            assert last_user_content(chat_api) == "[useru1] [file: a.txt]\n```\nalpha\n```"
            second = rig.fake.add_file("b.py", b"print(1)", mimetype="text/x-python")
            await rig.message("", channel="C1", channel_type="channel", thread_ts=thread_of(payload),
                              files=[second])
            assert len(chat_api.requests) == 2
            assert last_user_content(chat_api) == "[useru1] [file: b.py]\n```\nprint(1)\n```"


class TestLimitsAndOddFiles:
    """Refused and unreachable files cost a note each, never the answer."""

    async def test_too_large_file_gets_a_note_and_the_answer_still_comes(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """Over the per-file limit by its reported size: not downloaded, noted under the answer."""
        chat_api.script(MODEL_A, Behaviour(text="Here is my answer."))
        async with slack_rig(profile={"attachments": AttachmentLimits(max_file_bytes=1_000)}) as rig:
            big = rig.fake.add_file("big.log", b"x" * 5_000, mimetype="text/plain")
            payload = await rig.mention("<@UBOT> summarise", files=[big])
            assert rig.fake.downloads_of(big["id"]) == []
            (reply,) = rig.replies(payload)
            assert reply.startswith("Here is my answer.")
            assert "skipped `big.log`: it is 5 KB, over this bot's 1 KB limit per file" in reply
            assert last_user_content(chat_api) == "[useru1] summarise"

    async def test_a_lying_size_is_cut_one_byte_past_the_limit(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A file reported tiny but large is downloaded only to the limit and refused as too big."""
        async with slack_rig(profile={"attachments": AttachmentLimits(max_file_bytes=1_000)}) as rig:
            liar = rig.fake.add_file("small.txt", b"y" * 200_000, mimetype="text/plain", size=10)
            payload = await rig.mention("<@UBOT> read it", files=[liar])
            assert len(rig.fake.downloads_of(liar["id"])) == 1
            (reply,) = rig.replies(payload)
            assert "skipped `small.txt`: it is 1 KB, over this bot's 1 KB limit per file" in reply
            assert last_user_content(chat_api) == "[useru1] read it"

    async def test_deleted_external_and_id_only_files(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A tombstone is noted, an external file's host never sees the token (another fake stands
        in for Google Drive), and an id-only file is read through files.info: one answer for all."""
        async with FakeSlackAPI() as elsewhere, slack_rig() as rig:
            outside = elsewhere.add_file("secret.txt", b"not Slack's", mimetype="text/plain")
            external = rig.fake.external_file("secret.txt", outside["url_private"], mimetype="text/plain")
            shared = rig.fake.add_file("shared.txt", b"via files.info", mimetype="text/plain")
            id_only = rig.fake.unshared_file(shared)  # only the id: name and type from files.info
            files = [rig.fake.tombstone_file(), external, id_only]
            payload = await rig.mention("<@UBOT> three files", files=files)
            assert elsewhere.file_downloads == []
            assert rig.fake.calls_to("files.info")[0].args["file"] == shared["id"]
            assert last_user_content(chat_api) == (
                "[useru1] three files\n\n[file: shared.txt]\n```\nvia files.info\n```")
            (reply,) = rig.replies(payload)
            assert "skipped `file`" in reply and "skipped `secret.txt`: I couldn't download it" in reply


class TestSlackFiles:
    """`SlackFiles` on its own, against the fake."""

    async def test_download_stops_past_the_limit(self) -> None:
        """The bytes returned are the limit plus one, whatever the file's size; a stopped bot
        downloads nothing."""
        async with FakeSlackAPI() as fake, aiohttp.ClientSession() as session:
            client = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
            files = SlackFiles(session=lambda: session, client=client, token=fake.bot_token,
                               api_url=fake.base_url, max_bytes=100)
            big = fake.add_file("big.bin", b"z" * 1_000_000, mimetype="text/plain")
            small = fake.add_file("small.txt", b"ok", mimetype="text/plain")
            first, second = files.attachments(cast(list[SlackFile], [big, small]))
            assert (first.name, first.mime, first.size) == ("big.bin", "text/plain", 1_000_000)
            assert len(await first.fetch()) == 101
            assert await second.fetch() == b"ok"
            stopped = SlackFiles(session=lambda: None, client=client, token=fake.bot_token,
                                 api_url=fake.base_url, max_bytes=100)
            (orphan,) = stopped.attachments(cast(list[SlackFile], [small]))
            with pytest.raises(FileUnavailable, match="stopped"):
                await orphan.fetch()
            assert len(fake.downloads_of(small["id"])) == 1

    def test_token_goes_only_to_slack(self) -> None:
        api = "https://slack.com/api/"
        assert slack_host("https://files.slack.com/files-pri/T1-F1/a.png", api_url=api)
        assert slack_host("https://files.slack-gov.com/files-pri/T1-F1/a.png", api_url=api)
        assert slack_host("http://127.0.0.1:5000/files-pri/x", api_url="http://127.0.0.1:5000/api/")
        assert not slack_host("http://files.slack.com/files-pri/x", api_url=api)  # never in clear
        assert not slack_host("https://evilslack.com/x", api_url=api)
        assert not slack_host("https://files.slack.com.evil.example/x", api_url=api)
        assert not slack_host("https://drive.google.com/file/d/1", api_url=api)
        assert not slack_host("http://127.0.0.1:5001/x", api_url="http://127.0.0.1:5000/api/")
        assert not slack_host("not a url", api_url=api)


class TestMentionsThatShareFiles:
    """Slack may deliver a mention that shares files only as `message`/`file_share`, without its
    `app_mention` twin (slackapi/bolt-python#925): it is answered all the same, and once."""

    async def test_a_file_share_mention_without_its_app_mention_is_answered(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        async with slack_rig() as rig:
            notes = rig.fake.add_file("todo.txt", b"ship it", mimetype="text/plain")
            payload = await rig.message("<@UBOT> what's left?", channel="C1", channel_type="channel",
                                        files=[notes])
            assert len(chat_api.requests) == 1
            assert last_user_content(chat_api) == "[useru1] what's left?\n\n[file: todo.txt]\n```\nship it\n```"
            assert len(rig.replies(payload)) == 1

    async def test_both_twins_of_one_message_are_answered_once(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """Whichever twin arrives first answers; the other is the same message to the engine."""
        async with slack_rig() as rig:
            notes = rig.fake.add_file("todo.txt", b"ship it", mimetype="text/plain")
            ts = rig.next_ts()
            twin = rig.message_payload("<@UBOT> what's left?", channel="C1", channel_type="channel",
                                       files=[notes], ts=ts)
            mention = rig.mention_payload("<@UBOT> what's left?", channel="C1", files=[notes], ts=ts)
            assert await rig.post(twin) == 200
            assert await rig.post(mention) == 200
            await rig.bot.wait_idle()
            assert len(chat_api.requests) == 1
            assert len(rig.replies(mention)) == 1

    async def test_a_plain_message_twin_still_leaves_the_answer_to_app_mention(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """Without files the `message` twin of a mention is skipped before any Redis call."""
        async with slack_rig() as rig:
            await rig.message("<@UBOT> hello", channel="C1", channel_type="channel")
            assert chat_api.requests == []
