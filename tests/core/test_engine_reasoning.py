"""ConversationEngine with a reasoning model, on real Redis and the fake chat API: the user and the
history get the answer only, and the working signal stays up while the model thinks."""

from __future__ import annotations

import json
import time
import uuid

from redis.asyncio import Redis

from core.engine import EMPTY_ANSWER_NOTE
from core.redis_keys import RedisKeys
from core.types import Author, ConversationKey, IncomingMessage
from tests.conftest import EngineFactory
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.sinks import DEFAULT_TEST_LIMITS, RecordingSink

A = "test/model-a"
SECRET = "SECRET-PLAN"  # in every piece of reasoning: it must never be shown or saved
CONVERSATION = ConversationKey("test", "w1", "reasoning")


def incoming(text: str) -> IncomingMessage:
    return IncomingMessage(
        bot="testbot", platform="test", conversation=CONVERSATION, author=Author("u1", "alice"),
        text=text, event_id=uuid.uuid4().hex, received_at=time.time(),
    )


def reasoning_model(answer: str) -> Behaviour:
    """Reasoning in both forms: a `reasoning_content` field and a `<think>` block in the text."""
    return Behaviour(reasoning=f"{SECRET} one. " * 3, text=f"<think>{SECRET} two.</think>\n\n{answer}",
                     chunk_chars=3)


class TestReasoningModelTurns:
    """What the user sees and what is remembered when the model reasons first."""

    async def test_history_holds_the_answer_only(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """The saved turn and the next request carry the answer, never the reasoning."""
        engine = make_engine()
        chat_api.script(A, reasoning_model("Paris is the capital."), Behaviour(text="About 2 million."))
        sink = RecordingSink()
        outcome = await engine.handle(incoming("What is the capital of France?"), sink)
        assert outcome.status == "answered" and outcome.result is not None
        assert outcome.result.text == "Paris is the capital."
        assert sink.final_texts == ["Paris is the capital."]
        await engine.handle(incoming("How many people live there?"), RecordingSink())
        second = chat_api.requests[1].body
        assert second is not None
        assert [m["content"] for m in second["messages"]] == [
            "You are a test bot.", "What is the capital of France?", "Paris is the capital.",
            "How many people live there?",
        ]
        saved = await redis.lrange(keys.history("testbot", CONVERSATION), 0, -1)
        assert saved and not any(SECRET.encode() in item or b"think>" in item for item in saved)

    async def test_working_signal_stays_up_until_the_answer(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """While the model reasons the user sees the placeholder, then the answer: nothing between."""
        engine = make_engine()
        chat_api.script(A, reasoning_model("Here it is."))
        sink = RecordingSink()
        await engine.handle(incoming("question"), sink)
        kinds = [call.kind for call in sink.calls]
        assert kinds[0] == "start" and kinds[-1] == "finish"
        shown = [call.text for call in sink.calls if call.text is not None]
        assert shown[0] == DEFAULT_TEST_LIMITS.placeholder
        first_text = next(text for text in shown if text != DEFAULT_TEST_LIMITS.placeholder)
        assert first_text.startswith("Here")
        assert not any(SECRET in text or "think>" in text for text in shown)
        assert sink.final_texts == ["Here it is."]

    async def test_only_reasoning_never_leaves_the_placeholder(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """A model that only reasoned ends the reply in a final state without its reasoning."""
        engine = make_engine()
        chat_api.script(A, Behaviour(reasoning=SECRET, text=f"<think>{SECRET}</think>\n"))
        sink = RecordingSink()
        outcome = await engine.handle(incoming("question"), sink)
        assert outcome.result is not None and outcome.result.text == ""
        assert sink.finished.is_set()
        for text in sink.final_texts:
            assert text.strip() and text != DEFAULT_TEST_LIMITS.placeholder and SECRET not in text
        assert sink.final_texts == [EMPTY_ANSWER_NOTE]  # says what happened, not "(no answer)"
        saved = await redis.lrange(keys.history("testbot", CONVERSATION), 0, -1)
        assert not any(SECRET.encode() in item for item in saved)
        assert [json.loads(item)["role"] for item in saved] == ["user"]  # no empty answer is kept

    async def test_a_template_opened_block_is_kept_out_of_history(
        self, make_engine: EngineFactory, chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys
    ) -> None:
        """The chat template opened `<think>` in the prompt, so only `</think>` streams: what came
        before it was shown as it arrived (it cannot be taken back), but history keeps the answer only
        and the next turn's request carries no reasoning."""
        engine = make_engine()
        chat_api.script(A, Behaviour(text=f"{SECRET} first I plan.</think>\n\nThe answer.", chunk_chars=3),
                        Behaviour(text="Second answer."))
        outcome = await engine.handle(incoming("question"), RecordingSink())
        assert outcome.result is not None and outcome.result.answer == "The answer."
        saved = [json.loads(item) for item in await redis.lrange(keys.history("testbot", CONVERSATION), 0, -1)]
        assert [turn["content"] for turn in saved] == ["question", "The answer."]
        await engine.handle(incoming("again"), RecordingSink())
        sent = chat_api.requests[1].body
        assert sent is not None and not any(SECRET in str(m["content"]) for m in sent["messages"])
