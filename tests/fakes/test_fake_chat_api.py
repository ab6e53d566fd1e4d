"""Self-test of the fake Lunos chat-completions server, driven by httpx over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.fakes.chat_api import Behaviour, FakeChatAPI, RecordedRequest

pytestmark = pytest.mark.asyncio

MODEL = "test/model-a"
KEY = "sk-test"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-App-ID": "lunos-bots-tests"}


@pytest_asyncio.fixture
async def api() -> AsyncIterator[FakeChatAPI]:
    async with FakeChatAPI(api_key=KEY) as fake:
        yield fake


def chat_body(
    messages: list[dict[str, Any]] | None = None, *, stream: bool = True, model: str = MODEL
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages or [{"role": "user", "content": "hello"}],
        "max_tokens": 256,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def read_events(response: httpx.Response, sink: list[str]) -> None:
    """Append the payload of every ``data:`` line to ``sink`` (so callers keep it on errors)."""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            sink.append(line[len("data: ") :])


def content_of(events: list[str]) -> str:
    text = ""
    for data in events:
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices", []):
            text += choice["delta"].get("content") or ""
    return text


async def wait_finished(record: RecordedRequest) -> None:
    await asyncio.wait_for(record.finished.wait(), timeout=5.0)


async def test_default_stream_has_full_text_usage_and_done(api: FakeChatAPI) -> None:
    messages = [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "Hi Ada"},
        {"role": "user", "content": "what is my name?"},
    ]
    events: list[str] = []
    async with httpx.AsyncClient(base_url=api.base_url, headers=HEADERS) as client:
        async with client.stream("POST", "/chat/completions", json=chat_body(messages)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            await read_events(response, events)

    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    expected = "You said: what is my name?. (I have seen 2 user messages in this conversation.)"
    assert content_of(events) == expected
    with_choices = [c for c in chunks if c["choices"]]
    assert with_choices[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in with_choices[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    prompt_chars = sum(len(m["content"]) for m in messages)
    assert usage_chunk["usage"] == {
        "prompt_tokens": prompt_chars // 4 + 1,
        "completion_tokens": len(expected) // 4 + 1,
        "total_tokens": prompt_chars // 4 + 1 + len(expected) // 4 + 1,
    }

    (record,) = api.requests
    await wait_finished(record)
    assert record.path == "/v1/chat/completions"
    assert record.model == MODEL
    assert record.headers["x-app-id"] == "lunos-bots-tests"
    assert record.headers["Authorization"] == f"Bearer {KEY}"
    assert record.body is not None and record.body["messages"] == messages
    assert not record.client_disconnected
    assert api.open_streams == 0


async def test_non_streaming_continuation_and_reported_model(api: FakeChatAPI) -> None:
    api.script(MODEL, Behaviour(reported_model="test/model-b", finish_reason="length"))
    messages = [{"role": "user", "content": "go on"}, {"role": "assistant", "content": "Once upon"}]
    async with httpx.AsyncClient(base_url=api.base_url, headers=HEADERS) as client:
        response = await client.post("/chat/completions", json=chat_body(messages, stream=False))
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "chat.completion"
    assert payload["model"] == "test/model-b"
    assert payload["choices"][0]["message"] == {"role": "assistant", "content": " (continued)"}
    assert payload["choices"][0]["finish_reason"] == "length"
    assert payload["usage"]["completion_tokens"] == len(" (continued)") // 4 + 1


async def test_status_429_with_retry_after_then_script_repeats_last(api: FakeChatAPI) -> None:
    api.script(MODEL, Behaviour(kind="status", status=429, retry_after=2), Behaviour(text="ok now"))
    async with httpx.AsyncClient(base_url=api.base_url, headers=HEADERS) as client:
        first = await client.post("/chat/completions", json=chat_body())
        assert first.status_code == 429
        assert first.headers["retry-after"] == "2"
        error = first.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == 429 and error["message"]

        for _ in range(2):
            events: list[str] = []
            async with client.stream("POST", "/chat/completions", json=chat_body()) as response:
                assert response.status_code == 200
                await read_events(response, events)
            assert content_of(events) == "ok now"
    await api.wait_for_requests(3)
    assert len(api.requests_for(MODEL)) == 3
    assert api.requests_for("test/model-b") == []


async def test_die_drops_connection_mid_stream(api: FakeChatAPI) -> None:
    api.script(MODEL, Behaviour(kind="die", text="Hello world, how are you?", die_after_chars=6))
    events: list[str] = []
    async with httpx.AsyncClient(base_url=api.base_url, headers=HEADERS) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/chat/completions", json=chat_body()) as response:
                assert response.status_code == 200
                await read_events(response, events)
    assert content_of(events) == "Hello "
    assert "[DONE]" not in events
    assert all(c["finish_reason"] is None for e in events for c in json.loads(e)["choices"])
    (record,) = api.requests
    await wait_finished(record)
    assert not record.client_disconnected
    assert api.open_streams == 0


async def test_hang_then_client_timeout_is_recorded_as_disconnect(api: FakeChatAPI) -> None:
    api.script(MODEL, Behaviour(kind="hang"))
    timeout = httpx.Timeout(5.0, read=0.3)
    async with httpx.AsyncClient(base_url=api.base_url, headers=HEADERS, timeout=timeout) as client:
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream("POST", "/chat/completions", json=chat_body()) as response:
                assert response.status_code == 200
                assert api.open_streams == 1
                await read_events(response, [])
    (record,) = api.requests
    await wait_finished(record)
    assert record.client_disconnected
    assert api.open_streams == 0


async def test_stop_does_not_hang_with_open_stream() -> None:
    fake = FakeChatAPI()
    await fake.start()
    fake.script(MODEL, Behaviour(kind="hang"))

    async def consume(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", "/chat/completions", json=chat_body()) as response:
            await read_events(response, [])

    async with httpx.AsyncClient(base_url=fake.base_url, timeout=30.0) as client:
        consumer = asyncio.create_task(consume(client))
        await fake.wait_for_requests(1)
        await asyncio.wait_for(fake.stop(), timeout=5.0)
        with pytest.raises(httpx.TransportError):
            await asyncio.wait_for(consumer, timeout=5.0)
    assert fake.requests[0].finished.is_set()
    assert fake.open_streams == 0


async def test_inband_error_and_garbage(api: FakeChatAPI) -> None:
    api.script(MODEL, Behaviour(kind="inband_error", text="abcdefgh", die_after_chars=4))
    api.script("test/model-b", Behaviour(kind="garbage", text="abcdefgh", die_after_chars=4))
    async with httpx.AsyncClient(base_url=api.base_url, headers=HEADERS) as client:
        inband: list[str] = []
        async with client.stream("POST", "/chat/completions", json=chat_body()) as response:
            await read_events(response, inband)
        garbage: list[str] = []
        body = chat_body(model="test/model-b")
        async with client.stream("POST", "/chat/completions", json=body) as response:
            await read_events(response, garbage)
    assert content_of(inband[:-1]) == "abcd"
    assert json.loads(inband[-1])["error"]["type"] == "server_error"
    assert "[DONE]" not in inband
    assert "{not json" in garbage
    assert garbage[-1] == "[DONE]"


async def test_bad_key_gets_401(api: FakeChatAPI) -> None:
    bad = {"Authorization": "Bearer wrong"}
    async with httpx.AsyncClient(base_url=api.base_url) as client:
        models = await client.get("/models", headers=bad)
        assert models.status_code == 401
        assert models.json()["error"]["type"] == "authentication_error"
        chat = await client.post("/chat/completions", json=chat_body(), headers=bad)
        assert chat.status_code == 401
        assert chat.json()["error"]["code"] == 401
        good = await client.get("/models", headers=HEADERS)
    assert good.status_code == 200
    assert [m["id"] for m in good.json()["data"]] == ["test/model-a", "test/model-b", "test/model-c"]


async def test_wait_for_requests_times_out(api: FakeChatAPI) -> None:
    with pytest.raises(TimeoutError):
        await api.wait_for_requests(1, timeout=0.05)
