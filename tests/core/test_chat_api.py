"""ChatClient against a real local chat-completions server: every fallback and timeout rule."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from structlog.testing import capture_logs

from core.chat_api import CONTINUE_PROMPT, ChatClient, ChatTimeouts, RetryPolicy
from core.errors import (
    AllModelsFailed,
    AuthenticationFailed,
    ChatTimeout,
    EndpointNotFound,
    ModelNotFound,
    ModelUnavailable,
    OutOfCredits,
    RateLimited,
    RequestRejected,
)
from core.types import ChatMessage, ChatRequest
from tests.conftest import FAST_RETRY, FAST_TIMEOUTS, TEST_API_KEY
from tests.fakes.chat_api import Behaviour, FakeChatAPI

A, B, C = "test/model-a", "test/model-b", "test/model-c"


def request(*fallbacks: str, app_id: str = "app-under-test", max_tokens: int = 100) -> ChatRequest:
    return ChatRequest(
        app_id=app_id, model=A, fallback_models=fallbacks,
        messages=(ChatMessage("system", "be brief"), ChatMessage("user", "hello")), max_tokens=max_tokens,
    )


class Collector:
    def __init__(self) -> None:
        self.deltas: list[str] = []

    async def __call__(self, delta: str) -> None:
        self.deltas.append(delta)

    @property
    def text(self) -> str:
        return "".join(self.deltas)


class TestRequests:
    """What every request carries."""

    async def test_headers_and_body(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """Bearer key, X-App-ID, stream with usage, max_tokens and the first fallback as fallback_model."""
        chat_api.script(A, Behaviour(text="Hi there, friend."))
        got = Collector()
        result = await chat_client.stream(request(B, C), got)
        sent = chat_api.requests[0]
        assert sent.headers["Authorization"] == f"Bearer {TEST_API_KEY}"
        assert sent.headers["X-App-ID"] == "app-under-test"
        assert sent.body is not None
        assert sent.body["model"] == A and sent.body["stream"] is True
        assert sent.body["stream_options"] == {"include_usage": True}
        assert sent.body["fallback_model"] == B
        assert sent.body["max_tokens"] == 100
        assert sent.body["messages"] == [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "hello"}]
        assert result.text == got.text == "Hi there, friend."
        assert len(got.deltas) > 1, "text must arrive as it streams"
        assert result.model == A and not result.fallback_used and result.attempts == 1
        assert result.finish_reason == "stop" and not result.truncated
        assert result.usage is not None and result.usage.completion_tokens > 0

    async def test_no_fallback_model_without_fallbacks(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """A bot without fallbacks sends no fallback_model."""
        await chat_client.stream(request(), Collector())
        assert chat_api.requests[0].body is not None
        assert "fallback_model" not in chat_api.requests[0].body

    async def test_reports_the_model_that_answered(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """A server-side fallback shows in the response's model field and counts as a fallback."""
        chat_api.script(A, Behaviour(text="ok", reported_model="server/backup"))
        result = await chat_client.stream(request(B), Collector())
        assert result.model == "server/backup" and result.fallback_used

    async def test_length_finish_is_truncated(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """finish_reason 'length' is reported as truncated."""
        chat_api.script(A, Behaviour(text="cut", finish_reason="length"))
        assert (await chat_client.stream(request(), Collector())).truncated

    async def test_missing_usage_is_unknown(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """No usage chunk → usage None ("unknown"), not zeros."""
        chat_api.script(A, Behaviour(text="ok", include_usage=False))
        assert (await chat_client.stream(request(), Collector())).usage is None


class TestFallback:
    """Which failures move down the chain and which do not."""

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409])
    async def test_server_errors_fall_back(
        self, chat_api: FakeChatAPI, chat_client: ChatClient, status: int
    ) -> None:
        """5xx/408/409 are retried a bounded number of times, then the next model answers."""
        chat_api.script(A, Behaviour(kind="status", status=status))
        chat_api.script(B, Behaviour(text="from b"))
        result = await chat_client.stream(request(B), Collector())
        assert result.text == "from b" and result.model == B and result.fallback_used
        assert len(chat_api.requests_for(A)) == FAST_RETRY.attempts_per_model
        assert result.attempts == FAST_RETRY.attempts_per_model + 1

    async def test_retry_after_is_honoured(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """A 503 with a short Retry-After is retried on the same model after that wait."""
        chat_api.script(A, Behaviour(kind="status", status=503, retry_after=0.3), Behaviour(text="second try"))
        result = await chat_client.stream(request(B), Collector())
        first, second = chat_api.requests_for(A)
        assert result.text == "second try" and not result.fallback_used
        assert second.at - first.at >= 0.3

    async def test_long_retry_after_moves_on(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """A 429 asking for more than the cap goes to the next model instead of waiting."""
        chat_api.script(A, Behaviour(kind="status", status=429, retry_after=60))
        chat_api.script(B, Behaviour(text="b answers"))
        result = await chat_client.stream(request(B), Collector())
        assert len(chat_api.requests_for(A)) == 1 and result.model == B

    @pytest.mark.parametrize("status", [400, 401, 403, 404])
    async def test_client_errors_do_not_fall_back(
        self, chat_api: FakeChatAPI, chat_client: ChatClient, status: int
    ) -> None:
        """400/401/403/404 become a clear error at once; no other model is tried."""
        chat_api.script(A, Behaviour(kind="status", status=status, error_message="nope"))
        with pytest.raises(RequestRejected) as raised:
            await chat_client.stream(request(B), Collector())
        assert raised.value.status == status and "nope" in str(raised.value)
        assert len(chat_api.requests) == 1

    async def test_wrong_key_is_rejected(self, chat_api: FakeChatAPI) -> None:
        """A bad key is a RequestRejected with 401, and the key is not in the message."""
        async with ChatClient(base_url=chat_api.base_url, api_key="wrong-key-123456",
                              timeouts=FAST_TIMEOUTS, retry=FAST_RETRY) as client:
            with pytest.raises(RequestRejected) as raised:
                await client.stream(request(B), Collector())
        assert raised.value.status == 401 and "wrong-key" not in str(raised.value)

    async def test_all_failing_raises_with_every_attempt(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """When every model fails and nothing was shown, AllModelsFailed lists the attempts."""
        for model in (A, B):
            chat_api.script(model, Behaviour(kind="status", status=500))
        with pytest.raises(AllModelsFailed) as raised:
            await chat_client.stream(request(B), Collector())
        assert [a.model for a in raised.value.attempts] == [A, A, B, B]
        assert all(isinstance(a.error, ModelUnavailable) for a in raised.value.attempts)
        assert not raised.value.rate_limited

    async def test_all_rate_limited_says_so(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """Rate limits on every model are reported as such (the user is told to wait)."""
        for model in (A, B):
            chat_api.script(model, Behaviour(kind="status", status=429, retry_after=0.01))
        with pytest.raises(AllModelsFailed) as raised:
            await chat_client.stream(request(B), Collector())
        assert raised.value.rate_limited
        assert all(isinstance(a.error, RateLimited) for a in raised.value.attempts)

    async def test_connect_error_falls_back_and_fails_cleanly(self) -> None:
        """Nothing listening: a connect error per attempt, then AllModelsFailed."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        async with ChatClient(base_url=f"http://127.0.0.1:{port}/v1", api_key="k",
                              timeouts=FAST_TIMEOUTS, retry=FAST_RETRY) as client:
            with pytest.raises(AllModelsFailed) as raised:
                await client.stream(request(B), Collector())
        assert {a.model for a in raised.value.attempts} == {A, B}


class TestActionableErrors:
    """Each everyday API failure is its own error with its own hint, logged with the API's words."""

    @pytest.mark.parametrize(("status", "message", "kind"), [
        (402, "Insufficient credits", OutOfCredits),
        (401, "Invalid API key", AuthenticationFailed),
        (403, "Key not allowed", AuthenticationFailed),
        (404, "Not Found", EndpointNotFound),
        (400, "messages: must not be empty", RequestRejected),
    ])
    async def test_no_fallback_and_a_distinct_error(
        self, chat_api: FakeChatAPI, chat_client: ChatClient, status: int, message: str,
        kind: type[RequestRejected],
    ) -> None:
        """Credits, key, URL and a plain bad request: no other model is tried; the log has status and message."""
        chat_api.script(A, Behaviour(kind="status", status=status, error_message=message))
        with capture_logs() as logs, pytest.raises(RequestRejected) as raised:
            await chat_client.stream(request(B), Collector())
        assert type(raised.value) is kind and raised.value.api_message == message
        assert len(chat_api.requests) == 1
        [line] = [e for e in logs if e["event"] == "chat.rejected"]
        assert line["status"] == status and line["api_message"] == message and line["hint"] == kind.hint

    def test_hints_are_distinct(self) -> None:
        """Each failure a user can act on reads differently, and the URL one names LUNOS_BASE_URL."""
        kinds = [OutOfCredits, AuthenticationFailed, ModelNotFound, EndpointNotFound, RateLimited, ModelUnavailable]
        assert len({k.hint for k in kinds}) == len(kinds)
        assert "LUNOS_BASE_URL" in EndpointNotFound.hint and "LUNOS_API_KEY" in AuthenticationFailed.hint
        assert "credits" in OutOfCredits.hint and "model" in ModelNotFound.hint

    @pytest.mark.parametrize(("status", "message"), [
        (404, "The model `test/model-a` does not exist"),
        (400, "test/model-a is not a valid model ID"),
    ])
    async def test_unknown_primary_model_falls_back_loudly(
        self, chat_api: FakeChatAPI, chat_client: ChatClient, status: int, message: str
    ) -> None:
        """A 400/404 naming the configured model moves on to the fallback and logs the misconfiguration."""
        chat_api.script(A, Behaviour(kind="status", status=status, error_message=message))
        chat_api.script(B, Behaviour(text="from the fallback"))
        with capture_logs() as logs:
            result = await chat_client.stream(request(B), Collector())
        assert result.text == "from the fallback" and result.model == B and result.fallback_used
        assert len(chat_api.requests_for(A)) == 1
        [line] = [e for e in logs if e["event"] == "chat.model_misconfigured"]
        assert line["log_level"] == "error" and line["model"] == A and line["primary"] is True
        assert line["status"] == status and line["api_message"] == message and B in line["note"]

    async def test_unknown_model_without_fallback_is_model_not_found(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """With nothing to fall back to, the error names the model."""
        chat_api.script(A, Behaviour(kind="status", status=404, error_message="model not found"))
        with pytest.raises(ModelNotFound) as raised:
            await chat_client.stream(request(), Collector())
        assert raised.value.model == A and A in str(raised.value)

    async def test_wrong_base_url_is_endpoint_not_found(self, chat_api: FakeChatAPI) -> None:
        """A base URL missing /v1: the server's own 404 page, reported as the endpoint, not the model."""
        async with ChatClient(base_url=chat_api.base_url.removesuffix("/v1"), api_key=TEST_API_KEY,
                              timeouts=FAST_TIMEOUTS, retry=FAST_RETRY) as client:
            with pytest.raises(EndpointNotFound) as raised:
                await client.stream(request(B), Collector())
            with pytest.raises(EndpointNotFound):
                await client.list_models()
        assert "/chat/completions" in str(raised.value) and chat_api.requests == []


class TestBrokenStreams:
    """Streams that fail in flight: before or after text was shown."""

    async def test_hang_before_first_token_moves_on_and_closes_the_connection(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """No first token within the deadline → next model; the abandoned connection is closed."""
        chat_api.script(A, Behaviour(kind="hang"))
        chat_api.script(B, Behaviour(text="b is quick"))
        result = await chat_client.stream(request(B), Collector())
        assert result.text == "b is quick" and result.model == B
        abandoned = chat_api.requests_for(A)[0]
        async with asyncio.timeout(5):
            await abandoned.finished.wait()
        assert abandoned.client_disconnected
        assert len(chat_api.requests_for(A)) == 1, "a hanging model is not retried"

    async def test_slow_first_token_times_out(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """Role chunks do not count: the deadline is on the first content delta."""
        chat_api.script(A, Behaviour(text="late", ttft_s=FAST_TIMEOUTS.first_token_s + 1))
        with pytest.raises(AllModelsFailed) as raised:
            await chat_client.stream(request(), Collector())
        assert isinstance(raised.value.attempts[0].error, ChatTimeout)

    async def test_death_mid_stream_is_continued_by_the_next_model(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """Shown text is kept; the next model gets it as an assistant message and continues."""
        chat_api.script(A, Behaviour(kind="die", text="The answer is forty", die_after_chars=12))
        chat_api.script(B, Behaviour(text="-two."))
        got = Collector()
        result = await chat_client.stream(request(B), got)
        shown = got.deltas
        partial = "".join(shown)[: len("".join(shown)) - len("-two.")]
        assert partial and "The answer is forty".startswith(partial)
        assert result.text == got.text == partial + "-two."
        continuation = chat_api.requests_for(B)[0].body
        assert continuation is not None
        assert continuation["messages"][-2] == {"role": "assistant", "content": partial}
        assert continuation["messages"][-1] == {"role": "user", "content": CONTINUE_PROMPT}
        assert result.model == B and result.fallback_used and not result.interrupted

    async def test_death_with_nobody_to_continue_is_interrupted(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """No model can continue: the shown text is returned as interrupted, not an error."""
        chat_api.script(A, Behaviour(kind="die", text="Partial words here", die_after_chars=8))
        got = Collector()
        result = await chat_client.stream(request(), got)
        assert result.interrupted and result.text == got.text and result.text

    @pytest.mark.parametrize("kind", ["garbage", "inband_error"])
    async def test_malformed_or_error_events_fall_back(
        self, chat_api: FakeChatAPI, chat_client: ChatClient, kind: str
    ) -> None:
        """An unparseable line or an in-band error event before any text → next model."""
        chat_api.script(A, Behaviour(kind=kind, text="never shown", die_after_chars=0))  # type: ignore[arg-type]
        chat_api.script(B, Behaviour(text="clean"))
        result = await chat_client.stream(request(B), Collector())
        assert result.text == "clean" and result.model == B

    async def test_gap_between_chunks_times_out(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """A stream that stalls after text started is treated as dead and continued."""
        chat_api.script(A, Behaviour(text="slow slow slow", chunk_chars=4,
                                     token_delay_s=FAST_TIMEOUTS.chunk_gap_s + 0.5))
        chat_api.script(B, Behaviour(text=" done."))
        result = await chat_client.stream(request(B), Collector())
        assert result.text.startswith("slow") and result.text.endswith(" done.")
        assert result.model == B

    async def test_total_deadline(self, chat_api: FakeChatAPI) -> None:
        """The whole reply is bounded: a crawling stream ends as interrupted at the total deadline."""
        timeouts = ChatTimeouts(connect_s=1, first_token_s=1, chunk_gap_s=1, total_s=0.6)
        chat_api.script(A, Behaviour(text="x" * 100, chunk_chars=1, token_delay_s=0.05))
        async with ChatClient(base_url=chat_api.base_url, api_key=TEST_API_KEY, timeouts=timeouts,
                              retry=RetryPolicy(attempts_per_model=1)) as client:
            result = await client.stream(request(), Collector())
        assert result.interrupted and 0 < len(result.text) < 100


class TestListModels:
    """GET /models for `lunos-bots check`."""

    async def test_lists_models(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """The ids the server lists."""
        assert await chat_client.list_models() == [A, B, C]

    async def test_bad_key(self, chat_api: FakeChatAPI) -> None:
        """A wrong key is a RequestRejected 401."""
        async with ChatClient(base_url=chat_api.base_url, api_key="bad-key-000000") as client:
            with pytest.raises(RequestRejected):
                await client.list_models()


class TestDeadlinesAndEdges:
    """Deadlines measured with asyncio, and edge cases found in review."""

    async def test_keepalives_do_not_count_as_the_first_token(self, chat_api: FakeChatAPI) -> None:
        """Role chunks and SSE comments arrive, but no text: the first-token deadline still fires."""
        timeouts = ChatTimeouts(connect_s=1, first_token_s=0.6, chunk_gap_s=5, total_s=10)
        chat_api.script(A, Behaviour(text="late", ttft_s=3, keepalive_s=0.1))
        chat_api.script(B, Behaviour(text="b"))
        async with ChatClient(base_url=chat_api.base_url, api_key=TEST_API_KEY, timeouts=timeouts,
                              retry=FAST_RETRY) as client:
            result = await client.stream(request(B), Collector())
        assert result.model == B, "keep-alives counted as text would have let A answer 'late'"
        abandoned = chat_api.requests_for(A)[0]
        # B follows the first-token deadline (0.6 s from the client's start), not a keep-alive (0.1 s);
        # the server records A a little after the client started its clock, hence the margin.
        assert chat_api.requests_for(B)[0].at - abandoned.at > 0.3
        async with asyncio.timeout(5):
            await abandoned.finished.wait()
        assert abandoned.client_disconnected

    async def test_first_token_deadline_longer_than_the_gap(self, chat_api: FakeChatAPI) -> None:
        """A slow first token within first_token_s is accepted even when it exceeds chunk_gap_s."""
        timeouts = ChatTimeouts(connect_s=1, first_token_s=3, chunk_gap_s=0.3, total_s=10)
        chat_api.script(A, Behaviour(text="worth the wait", ttft_s=1.0))
        async with ChatClient(base_url=chat_api.base_url, api_key=TEST_API_KEY, timeouts=timeouts,
                              retry=FAST_RETRY) as client:
            result = await client.stream(request(), Collector())
        assert result.text == "worth the wait" and result.attempts == 1

    async def test_rejected_continuation_keeps_the_shown_text(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """A 400 on the continuation does not take back what the user saw: interrupted result."""
        chat_api.script(A, Behaviour(kind="die", text="Shown part of it", die_after_chars=10))
        chat_api.script(B, Behaviour(kind="status", status=400))
        got = Collector()
        result = await chat_client.stream(request(B), got)
        assert result.interrupted and result.text == got.text and result.text
        assert result.model == A and not result.fallback_used

    async def test_total_deadline_credits_the_model_that_wrote(self, chat_api: FakeChatAPI) -> None:
        """When the deadline cuts a fallback's stream, the result names the fallback."""
        timeouts = ChatTimeouts(connect_s=1, first_token_s=1, chunk_gap_s=1, total_s=0.8)
        chat_api.script(A, Behaviour(kind="status", status=500))
        chat_api.script(B, Behaviour(text="y" * 200, chunk_chars=1, token_delay_s=0.02))
        async with ChatClient(base_url=chat_api.base_url, api_key=TEST_API_KEY, timeouts=timeouts,
                              retry=RetryPolicy(attempts_per_model=1)) as client:
            result = await client.stream(request(B), Collector())
        assert result.interrupted and result.model == B and result.fallback_used

    async def test_429_retry_after_is_waited_on(self, chat_api: FakeChatAPI, chat_client: ChatClient) -> None:
        """A 429 with a Retry-After under the cap waits that long, then retries the same model."""
        chat_api.script(A, Behaviour(kind="status", status=429, retry_after=0.25), Behaviour(text="ok now"))
        result = await chat_client.stream(request(B), Collector())
        first, second = chat_api.requests_for(A)
        assert result.text == "ok now" and second.at - first.at >= 0.25 and not chat_api.requests_for(B)

    async def test_gap_timeout_closes_the_connection(
        self, chat_api: FakeChatAPI, chat_client: ChatClient
    ) -> None:
        """A stream abandoned for silence is closed by the client, not left open."""
        chat_api.script(A, Behaviour(text="abc def ghi", chunk_chars=4, token_delay_s=5))
        chat_api.script(B, Behaviour(text=" rest"))
        await chat_client.stream(request(B), Collector())
        abandoned = chat_api.requests_for(A)[0]
        async with asyncio.timeout(5):
            await abandoned.finished.wait()
        assert abandoned.client_disconnected and chat_api.open_streams == 0


def sse_transport(body: bytes, status: int = 200) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body)

    return httpx.MockTransport(handler)


class TestNarrowCases:
    """Cases a real server rarely produces, through httpx.MockTransport."""

    async def test_done_without_finish_reason_is_a_failure(self) -> None:
        """[DONE] alone does not make a success: finish_reason is required too."""
        body = b'data: {"model": "m", "choices": [{"delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n'
        async with ChatClient(base_url="http://api.test/v1", api_key="k", transport=sse_transport(body),
                              retry=RetryPolicy(attempts_per_model=1)) as client:
            result = await client.stream(request(), Collector())
        assert result.interrupted and result.text == "hi"

    async def test_connect_timeout_moves_on(self) -> None:
        """A connect timeout is a ChatTimeout that falls back, and ends as AllModelsFailed."""
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectTimeout("timed out", request=request)

        async with ChatClient(base_url="http://api.test/v1", api_key="k", transport=httpx.MockTransport(handler),
                              retry=FAST_RETRY) as client:
            with pytest.raises(AllModelsFailed) as raised:
                await client.stream(request(B), Collector())
        assert [type(a.error) for a in raised.value.attempts] == [ChatTimeout, ChatTimeout]
        assert [a.model for a in raised.value.attempts] == [A, B]

    def test_retry_after_forms(self) -> None:
        """Retry-After as seconds or as an HTTP date; garbage is ignored."""
        from datetime import UTC, datetime, timedelta
        from email.utils import format_datetime

        from core.chat_api import _retry_after

        assert _retry_after("2.5") == 2.5
        in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
        parsed = _retry_after(in_ten)
        assert parsed is not None and 8 <= parsed <= 10
        assert _retry_after("soon") is None and _retry_after(None) is None

    async def test_backoff_is_jittered_and_bounded(self) -> None:
        """Without Retry-After the wait grows per try, jittered, capped at backoff_max_s."""
        policy = RetryPolicy(attempts_per_model=5, backoff_base_s=1, backoff_max_s=3)
        waits = []
        for jitter in (0.0, 1.0):
            async with ChatClient(base_url="http://api.test/v1", api_key="k", retry=policy,
                                  jitter=lambda j=jitter: j) as client:
                waits.append([client._wait_before_retry(ModelUnavailable("x"), n) for n in (1, 2, 3)])
        assert waits[0] == [0.5, 1.0, 1.5] and waits[1] == [1.5, 3.0, 4.5]
