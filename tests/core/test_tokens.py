"""TokenEstimator: characters to tokens, calibrated per model by what the API reports."""

from __future__ import annotations

from core.tokens import DEFAULT_CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS, TokenEstimator
from core.types import ChatMessage


class TestTokenEstimator:
    """Estimates move toward each model's observed ratio, and only that model's."""

    def test_default_ratio(self) -> None:
        """Without observations: ~4 characters per token plus a per-message overhead."""
        messages = [ChatMessage("user", "x" * 400)]
        assert TokenEstimator().estimate(messages, "m") == 400 / DEFAULT_CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS

    def test_calibration_per_model(self) -> None:
        """A model reporting 2 chars/token raises its estimates; another model is untouched."""
        estimator = TokenEstimator()
        messages = [ChatMessage("user", "y" * 400)]
        before = estimator.estimate(messages, "dense")
        for _ in range(30):
            estimator.calibrate("dense", messages, prompt_tokens=200 + MESSAGE_OVERHEAD_TOKENS)
        assert abs(estimator.ratio("dense") - 2.0) < 0.05
        assert estimator.estimate(messages, "dense") > before * 1.8
        assert estimator.ratio("other") == DEFAULT_CHARS_PER_TOKEN

    def test_absurd_reports_are_bounded(self) -> None:
        """One odd usage report cannot make the ratio absurd."""
        estimator = TokenEstimator()
        estimator.calibrate("m", [ChatMessage("user", "z" * 10)], prompt_tokens=100_000)
        assert estimator.ratio("m") >= 1.0
