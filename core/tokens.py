"""`TokenEstimator`: prompt size in tokens, from characters, calibrated per model.

No tokenizer is downloaded at run time: we start from ~4 characters per token and learn each
model's ratio from the `prompt_tokens` the API reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from core.types import ChatMessage

DEFAULT_CHARS_PER_TOKEN = 4.0  # OpenAI's rule of thumb for English
MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators per message
CALIBRATION_WEIGHT = 0.2  # how far one observation moves the learned ratio
# An image's cost varies by model and size (OpenAI: 85 tokens at low detail, up to ~1,100 at high);
# counted high so the history kept beside it still fits.
IMAGE_TOKENS = 1_000
MIN_CHARS_PER_TOKEN, MAX_CHARS_PER_TOKEN = 1.0, 8.0  # keep one odd report from skewing it


@dataclass
class TokenEstimator:
    """Estimates tokens per model; `calibrate` with what the API reported."""

    chars_per_token: dict[str, float] = field(default_factory=dict)

    def ratio(self, model: str) -> float:
        return self.chars_per_token.get(model, DEFAULT_CHARS_PER_TOKEN)

    def estimate(self, messages: Sequence[ChatMessage], model: str) -> int:
        ratio = self.ratio(model)
        return sum(int(len(m.text()) / ratio) + MESSAGE_OVERHEAD_TOKENS + IMAGE_TOKENS * len(m.images)
                   for m in messages)

    def calibrate(self, model: str, messages: Sequence[ChatMessage], prompt_tokens: int) -> None:
        overhead = sum(MESSAGE_OVERHEAD_TOKENS + IMAGE_TOKENS * len(m.images) for m in messages)
        chars = sum(len(m.text()) for m in messages)
        content_tokens = prompt_tokens - overhead
        if chars <= 0 or content_tokens <= 0:
            return
        observed = min(MAX_CHARS_PER_TOKEN, max(MIN_CHARS_PER_TOKEN, chars / content_tokens))
        current = self.ratio(model)
        self.chars_per_token[model] = current + CALIBRATION_WEIGHT * (observed - current)
