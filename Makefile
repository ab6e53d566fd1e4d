# The two commands a newcomer needs: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench fake-api clean

install: $(STAMP)

# Reinstalls only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/lunos-bots run

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Redis: REDIS_URL if it answers, else a throwaway redis-server on a free port (.ci/with_redis.py).
test: install lint
	$(BIN)/python .ci/with_redis.py $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python .ci/with_redis.py $(BIN)/python -m benchmarks

# A local fake of the chat API, to run the bots without a key: LUNOS_BASE_URL=http://127.0.0.1:8089/v1
fake-api: install
	$(BIN)/python -m tests.fakes.chat_api --port 8089

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
