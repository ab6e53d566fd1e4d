"""ChatClient against the fake chat API with reasoning models: reasoning is liveness, never text."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from core.chat_api import ChatClient, ChatTimeouts
from core.errors import ChatTimeout
from core.types import ChatMessage, ChatRequest
from tests.conftest import FAST_RETRY, FAST_TIMEOUTS, TEST_API_KEY
from tests.core.test_chat_api import Collector
from tests.fakes.chat_api import Behaviour, FakeChatAPI

A, B = "test/model-a", "test/model-b"
SECRET = "SECRET-PLAN"  # in every piece of reasoning: it must never reach the answer


def request(*fallbacks: str) -> ChatRequest:
    return ChatRequest(
        app_id="app-under-test", model=A, fallback_models=fallbacks,
        messages=(ChatMessage("system", "be brief"), ChatMessage("user", "hello")), max_tokens=100,
    )


def assert_no_reasoning(got: Collector) -> None:
    for delta in got.deltas:
        assert SECRET not in delta and "think>" not in delta, got.deltas


class TestReasoningFields:
    """`reasoning_content` (DeepSeek) and `reasoning` (OpenRouter) deltas."""

    @pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
    async def test_reasoning_deltas_are_not_text(
        self, chat_api: FakeChatAPI, chat_client: ChatClient, field: str
    ) -> None:
        """Neither `on_delta` nor the result sees reasoning; the first delta is the answer's start."""
        chat_api.script(A, Behaviour(reasoning=f"{SECRET}: add two and two. " * 3, text="It is 4.",
                                     reasoning_field=field))  # type: ignore[arg-type]
        got = Collector()
        result = await chat_client.stream(request(), got)
        assert result.text == got.text == "It is 4."
        assert got.deltas[0].startswith("It")
        assert_no_reasoning(got)
        assert result.attempts == 1 and result.finish_reason == "stop"

    async def test_answer_after_reasoning_starts_without_blank_lines(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """Line breaks between the reasoning and the answer's first word are not shown."""
        chat_api.script(A, Behaviour(reasoning=SECRET, text="\n\nAnswer.\n\nMore.", chunk_chars=1))
        got = Collector()
        result = await chat_client.stream(request(), got)
        assert result.text == got.text == "Answer.\n\nMore."

    async def test_reasoning_longer_than_the_first_token_deadline(self, chat_api: FakeChatAPI) -> None:
        """A model that reasons past first_token_s, chunk after chunk within chunk_gap_s, answers."""
        timeouts = ChatTimeouts(connect_s=2, first_token_s=0.25, chunk_gap_s=0.4, total_s=10)
        delay = 0.05
        reasoning = SECRET * 2  # one character a chunk: ~1 s of thinking before the first word
        assert delay * len(reasoning) > timeouts.first_token_s * 3
        chat_api.script(A, Behaviour(reasoning=reasoning, text="Done.", chunk_chars=1, token_delay_s=delay))
        got = Collector()
        async with ChatClient(base_url=chat_api.base_url, api_key=TEST_API_KEY, timeouts=timeouts,
                              retry=FAST_RETRY) as client:
            result = await client.stream(request(B), got)
        assert result.text == "Done." and result.model == A and result.attempts == 1
        assert not chat_api.requests_for(B)
        assert_no_reasoning(got)

    async def test_reasoning_that_stalls_times_out(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """Once the model reasons, silence longer than chunk_gap_s is a dead stream: next model."""
        chat_api.script(A, Behaviour(reasoning=SECRET * 2, chunk_chars=4, text="never",
                                     token_delay_s=FAST_TIMEOUTS.chunk_gap_s + 0.5))
        chat_api.script(B, Behaviour(text="from b"))
        got = Collector()
        with capture_logs() as logs:
            result = await chat_client.stream(request(B), got)
        assert result.text == got.text == "from b" and result.model == B
        failed = [e for e in logs if e["event"] == "chat.attempt_failed"]
        assert failed and failed[0]["error_type"] == ChatTimeout.__name__
        assert "gap between chunks" in failed[0]["error"]

    async def test_death_while_reasoning_shows_nothing(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """A stream that dies while reasoning showed nothing: the next model answers from scratch."""
        chat_api.script(A, Behaviour(kind="die", reasoning=SECRET, text="unseen", die_after_chars=0))
        chat_api.script(B, Behaviour(text="fresh answer"))
        got = Collector()
        result = await chat_client.stream(request(B), got)
        assert result.text == got.text == "fresh answer"
        sent = chat_api.requests_for(B)[0].body
        assert sent is not None and sent["messages"][-1] == {"role": "user", "content": "hello"}


class TestThinkBlocks:
    """`<think>…</think>` in the content stream, split across SSE events."""

    @pytest.mark.parametrize("chunk_chars", [1, 2, 3, 5, 7, 8, 9])
    async def test_blocks_split_across_events_are_stripped(
        self, chat_api: FakeChatAPI, chat_client: ChatClient, chunk_chars: int
    ) -> None:
        """Tags cut at every offset: the answer alone, the first delta its first text."""
        text = f"<think>{SECRET}, step by step.</think>\n\nThe answer<think>{SECRET}</think> is 4."
        chat_api.script(A, Behaviour(text=text, chunk_chars=chunk_chars))
        got = Collector()
        result = await chat_client.stream(request(), got)
        assert result.text == got.text == "The answer is 4."
        assert got.deltas[0].startswith("T")
        assert_no_reasoning(got)

    async def test_lookalike_at_the_end_is_released(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """A `<` held back as a possible tag is shown when the stream ends ([DONE])."""
        chat_api.script(A, Behaviour(text="a <b and c <th", chunk_chars=3))
        got = Collector()
        result = await chat_client.stream(request(), got)
        assert result.text == got.text == "a <b and c <th"

    @pytest.mark.parametrize("text", ["<think>all thought, no answer</think>\n", "<think>never closed"])
    async def test_only_reasoning_is_an_empty_answer(
        self, chat_api: FakeChatAPI, chat_client: ChatClient, text: str
    ) -> None:
        """A finished stream with nothing but reasoning is an empty answer, as one with no content."""
        chat_api.script(A, Behaviour(text=text, reasoning=SECRET))
        got = Collector()
        result = await chat_client.stream(request(), got)
        assert result.text == "" and got.deltas == []
        assert result.finish_reason == "stop" and not result.interrupted and result.attempts == 1

    async def test_continuation_carries_only_visible_text(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """A broken answer is continued from what the user saw; the continuation's own reasoning
        is hidden and the space before its first word kept."""
        shown_text = f"<think>{SECRET}</think>\n\nThe answer is"
        chat_api.script(A, Behaviour(kind="die", text=shown_text + " forty", die_after_chars=len(shown_text),
                                     chunk_chars=4))
        chat_api.script(B, Behaviour(text=f"<think>{SECRET}</think>\n\n forty-two.", reasoning=SECRET))
        got = Collector()
        result = await chat_client.stream(request(B), got)
        assert result.text == got.text == "The answer is forty-two."
        continuation = chat_api.requests_for(B)[0].body
        assert continuation is not None
        assert continuation["messages"][-2] == {"role": "assistant", "content": "The answer is"}
        assert_no_reasoning(got)


async def raw_events(api: FakeChatAPI, behaviour: Behaviour) -> list[dict[str, Any]]:
    """The fake's SSE events for one streamed request, as JSON (the [DONE] line left out)."""
    api.script(A, behaviour)
    body = {"model": A, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{api.base_url}/chat/completions", json=body,
                                   headers={"Authorization": f"Bearer {TEST_API_KEY}"})
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


class TestFakeReasoningWire:
    """The fake streams reasoning the way the providers document it."""

    async def test_deepseek_shape(self, chat_api: FakeChatAPI) -> None:
        """`reasoning_content` beside `content: null` first, then content beside a null field."""
        events = await raw_events(chat_api, Behaviour(reasoning="abcdef", text="xyz", chunk_chars=3))
        deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
        assert deltas[0] == {"role": "assistant", "content": None, "reasoning_content": "abc"}
        assert deltas[1] == {"content": None, "reasoning_content": "def"}
        assert deltas[2] == {"content": "xyz", "reasoning_content": None}
        usage = events[-1]["usage"]
        plain = await raw_events(chat_api, Behaviour(text="xyz"))
        assert usage["completion_tokens"] > plain[-1]["usage"]["completion_tokens"], "reasoning is billed"

    async def test_openrouter_shape(self, chat_api: FakeChatAPI) -> None:
        """`reasoning` beside `content: ""`, then plain content deltas."""
        events = await raw_events(chat_api, Behaviour(reasoning="abc", text="xyz", chunk_chars=3,
                                                      reasoning_field="reasoning"))
        deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
        assert deltas[0] == {"role": "assistant", "content": "", "reasoning": "abc"}
        assert deltas[1] == {"content": "xyz"}


class TestPromptOpenedTemplates:
    """A model that streams a stray `</think>` is remembered: its next answers hide the reasoning."""

    async def test_the_first_answer_teaches_the_client(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        chat_api.script(A, Behaviour(text=f"{SECRET} plan.</think>\n\nFirst."),
                        Behaviour(text=f"{SECRET} plan again.</think>\n\nSecond.", chunk_chars=2),
                        Behaviour(text="Third, with no reasoning."),
                        Behaviour(text=f"{SECRET} leaks once more.</think>Fourth."))
        first = Collector()
        result = await chat_client.stream(request(B), first)
        assert SECRET in first.text and result.answer == "First."  # shown live, kept out of history
        second = Collector()
        result = await chat_client.stream(request(B), second)
        assert second.text == result.text == result.answer == "Second."
        assert_no_reasoning(second)
        third = Collector()
        result = await chat_client.stream(request(B), third)  # held, then released whole
        assert third.deltas == ["Third, with no reasoning."] and result.text == "Third, with no reasoning."
        fourth = Collector()
        await chat_client.stream(request(B), fourth)  # forgotten after the plain answer: learns again
        assert SECRET in fourth.text
