# The two commands a newcomer needs: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench soak fake-api clean

install: $(STAMP)

# Reinstalls only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Only the console bot (no Slack/Discord tokens): it needs this terminal, and no port is opened.
run: install
	$(BIN)/lunos-bots run

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Redis: REDIS_URL if it answers, else a throwaway redis-server on a free port (.ci/with_redis.py).
# Two workers, each taking whole files (their fixtures are per file): most tests wait on fake
# servers rather than compute, so two run in about half the time (~2.5 min instead of ~4.5).
test: install lint
	$(BIN)/python .ci/with_redis.py $(BIN)/python -m pytest -q -n 2 --dist loadfile

# The real `lunos-bots run` process measured from outside at the fake platforms: one table per
# platform, PNG plots in docs/img/ (matplotlib: the `bench` extra, installed here only, so `make test`
# never needs it). It starts its own private redis-server. `make bench BENCH_ARGS=--quick` for a short
# run; `BENCH_ARGS=--in-process` runs the engine benchmarks (they use REDIS_URL, or a throwaway Redis).
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python .ci/with_redis.py $(BIN)/python -m benchmarks $(BENCH_ARGS)

# ~1,000 turns with faults mixed at random from a fixed seed; prints each invariant as a count.
soak: install
	$(BIN)/python .ci/with_redis.py $(BIN)/python -m tests.reliability.soak

# A local fake of the chat API, to run the bots without a key: LUNOS_BASE_URL=http://127.0.0.1:8089/v1
# It answers at a visible pace (first token after 0.4 s, then a chunk every 40 ms) so streaming shows.
fake-api: install
	$(BIN)/python -m tests.fakes.chat_api --port 8089 --ttft 0.4 --token-delay 0.04

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
