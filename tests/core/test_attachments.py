"""Files sent with a message: what `read_attachments` makes of them, and what the engine sends the
model and keeps in history (real Redis, the fake chat API recording the content parts)."""

from __future__ import annotations

import base64
import time
import uuid

from core.attachments import kind_of, read_attachments
from core.profile import AttachmentLimits
from core.types import Attachment, Author, Command, ConversationKey, IncomingMessage
from tests.conftest import EngineFactory
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.sinks import RecordingSink

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
VISION = AttachmentLimits(vision=True)


class Served:
    """Files by name, counting downloads (an adapter's fetch, without a platform)."""

    def __init__(self) -> None:
        self.downloads: list[str] = []

    def file(self, name: str, mime: str, data: bytes, *, size: int | None = -1) -> Attachment:
        async def fetch() -> bytes:
            self.downloads.append(name)
            return data

        return Attachment(name=name, mime=mime, size=len(data) if size == -1 else size, fetch=fetch)

    def broken(self, name: str, mime: str) -> Attachment:
        async def fetch() -> bytes:
            self.downloads.append(name)
            raise ConnectionError("the platform hung up")

        return Attachment(name=name, mime=mime, size=10, fetch=fetch)


def incoming(text: str, *files: Attachment, conversation: str = "c1") -> IncomingMessage:
    return IncomingMessage(
        bot="testbot", platform="test", conversation=ConversationKey("test", "w1", conversation),
        author=Author("u1", "alice"), text=text, event_id=uuid.uuid4().hex, received_at=time.time(),
        attachments=files,
    )


class TestReading:
    """`read_attachments` on its own: limits, kinds, notes."""

    async def test_an_image_becomes_a_data_url_part(self) -> None:
        served = Served()
        read = await read_attachments([served.file("cat.png", "image/png", PNG)], VISION)
        assert [image.as_api() for image in read.images] == [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}]
        assert read.history_text == "[image: cat.png]" and read.notes == []

    async def test_without_vision_an_image_is_not_downloaded_and_is_noted(self) -> None:
        served = Served()
        read = await read_attachments([served.file("cat.png", "image/png", PNG)], AttachmentLimits())
        assert served.downloads == [] and read.images == []
        assert read.notes == ["_(skipped `cat.png`: this bot doesn't look at images)_"]

    async def test_text_files_are_inlined_and_code_is_recognised_by_name(self) -> None:
        served = Served()
        read = await read_attachments([
            served.file("notes.md", "text/markdown", b"# Title\nbody"),
            served.file("main.py", "application/octet-stream", b"print('hi')"),
        ], AttachmentLimits())
        assert "[file: notes.md]\n```\n# Title\nbody\n```" in read.text
        assert "[file: main.py]\n```\nprint('hi')\n```" in read.text
        assert read.history_text == read.text and read.notes == []

    async def test_every_refusal_gets_one_note_and_nothing_crashes(self) -> None:
        served = Served()
        limits = AttachmentLimits(vision=True, max_files=5, max_file_bytes=1_000, max_total_bytes=1_500,
                                  max_text_chars=5)
        read = await read_attachments([
            served.file("archive.zip", "application/zip", b"PK"),
            served.file("huge.txt", "text/plain", b"x" * 2_000),
            served.file("photo.heic", "image/heic", b"..."),
            served.broken("gone.txt", "text/plain"),
            served.file("binary.txt", "text/plain", b"\xff\xfe\x00"),
            served.file("sixth.txt", "text/plain", b"never read"),
        ], limits)
        assert read.notes == [
            "_(skipped `archive.zip`: I can't read application/zip files)_",
            "_(skipped `huge.txt`: it is 2 KB, over this bot's 1 KB limit per file)_",
            "_(skipped `photo.heic`: images must be PNG, JPEG, GIF or WebP)_",
            "_(skipped `gone.txt`: I couldn't download it)_",
            "_(skipped `binary.txt`: it isn't UTF-8 text)_",
            "_(skipped `sixth.txt`: I read at most 5 files per message)_",
        ]
        assert "archive.zip" not in served.downloads and "huge.txt" not in served.downloads
        assert read.text == "" and read.images == []

    async def test_a_size_the_platform_misreported_is_checked_after_download(self) -> None:
        served = Served()
        read = await read_attachments([served.file("big.log", "text/plain", b"y" * 3_000, size=None)],
                                      AttachmentLimits(max_file_bytes=1_000))
        assert read.text == "" and read.notes == ["_(skipped `big.log`: it is 3 KB, over this bot's 1 KB limit per file)_"]

    async def test_total_bytes_and_long_text(self) -> None:
        served = Served()
        read = await read_attachments([
            served.file("a.txt", "text/plain", b"a" * 600),
            served.file("b.txt", "text/plain", b"b" * 600),
        ], AttachmentLimits(max_total_bytes=1_000, max_text_chars=100))
        assert read.notes == [
            "_(read only the first 100 characters of `a.txt`)_",
            "_(skipped `b.txt`: the files of one message may total 1 KB)_",
        ]
        assert "a" * 100 + "\n```" in read.text and "a" * 101 not in read.text

    def test_kinds(self) -> None:
        def kind(name: str, mime: str) -> str:
            return kind_of(Attachment(name=name, mime=mime, size=1, fetch=Served().file(name, mime, b"").fetch))

        assert kind("x.png", "image/png") == "image" and kind("x.png", "") == "image"
        assert kind("x.json", "application/json") == "text" and kind("x.ts", "video/mp2t") == "text"
        assert kind("x.pdf", "application/pdf") == "other"


class TestThroughTheEngine:
    """What the model is sent, what history keeps, what the user sees."""

    async def test_the_image_reaches_the_model_once_and_history_keeps_a_reference(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        engine = make_engine(attachments=VISION)
        served = Served()
        chat_api.script("test/model-a", Behaviour(text="A cat."), Behaviour(text="It was grey."))
        outcome = await engine.handle(incoming("what is this?", served.file("cat.png", "image/png", PNG)),
                                      RecordingSink())
        assert outcome.status == "answered"
        user = chat_api.requests[0].body["messages"][-1]  # type: ignore[index]
        assert user["role"] == "user"
        assert user["content"][0] == {"type": "text", "text": "what is this?"}
        assert user["content"][1]["type"] == "image_url"
        assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")

        await engine.handle(incoming("what colour was it?"), RecordingSink())
        later = chat_api.requests[1].body["messages"]  # type: ignore[index]
        assert [m["content"] for m in later[1:]] == [
            "what is this?\n\n[image: cat.png]", "A cat.", "what colour was it?"]

    async def test_a_file_without_a_caption_is_a_question_not_help(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        engine = make_engine()
        served = Served()
        message = incoming("", served.file("error.log", "text/plain", b"Traceback: boom"))
        assert message.command is None
        assert incoming("").command is Command.HELP
        outcome = await engine.handle(message, RecordingSink())
        assert outcome.status == "answered"
        sent = chat_api.requests[0].body["messages"][-1]["content"]  # type: ignore[index]
        assert sent == "[file: error.log]\n```\nTraceback: boom\n```"

    async def test_a_refused_file_is_noted_in_the_reply_and_the_answer_still_comes(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        engine = make_engine()
        served = Served()
        chat_api.script("test/model-a", Behaviour(text="Here is my answer."))
        sink = RecordingSink()
        outcome = await engine.handle(incoming("summarise", served.file("deck.pdf", "application/pdf", b"%PDF")),
                                      sink)
        assert outcome.status == "answered"
        shown = "\n".join(sink.messages.values())
        assert "Here is my answer." in shown
        assert "_(skipped `deck.pdf`: I can't read application/pdf files)_" in shown
        sent = chat_api.requests[0].body["messages"][-1]["content"]  # type: ignore[index]
        assert sent == "summarise"


class TestNothingToRead:
    async def test_only_unreadable_files_get_the_notes_and_no_model_call(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """A PDF alone: the model would be asked an empty question, so it is not asked at all."""
        engine = make_engine()
        served = Served()
        sink = RecordingSink()
        outcome = await engine.handle(incoming("", served.file("deck.pdf", "application/pdf", b"%PDF")), sink)
        assert outcome.status == "refused" and chat_api.requests == []
        assert sink.final_texts == ["_(skipped `deck.pdf`: I can't read application/pdf files)_"]

    async def test_an_image_alone_is_sent_without_an_empty_text_part(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        engine = make_engine(attachments=VISION)
        served = Served()
        await engine.handle(incoming("", served.file("cat.png", "image/png", PNG)), RecordingSink())
        content = chat_api.requests[0].body["messages"][-1]["content"]  # type: ignore[index]
        assert [part["type"] for part in content] == ["image_url"]


class TestResolvedFiles:
    async def test_a_file_named_only_by_id_is_looked_up_before_it_is_judged(self) -> None:
        """The event knew no name or type; `resolve` supplies them (Slack's files.info)."""
        served = Served()
        real = served.file("notes.md", "text/markdown", b"# hi")

        async def resolve() -> Attachment:
            return real

        unknown = Attachment(name="file", mime="", size=None, fetch=real.fetch, resolve=resolve)
        read = await read_attachments([unknown], AttachmentLimits())
        assert read.text == "[file: notes.md]\n```\n# hi\n```" and read.notes == []

    async def test_a_failed_lookup_costs_that_file_only(self) -> None:
        served = Served()

        async def resolve() -> Attachment:
            raise ConnectionError("files.info failed")

        unknown = Attachment(name="file", mime="", size=None, fetch=served.broken("x", "").fetch,
                             resolve=resolve)
        read = await read_attachments([unknown, served.file("a.txt", "text/plain", b"A")], AttachmentLimits())
        assert read.notes == ["_(skipped `file`: I couldn't download it)_"] and "[file: a.txt]" in read.text
