# The README's two commands: `make run` (cloudward's main job) and `make test` (the whole suite).
.PHONY: run test bench lint

run:
	scripts/run

test:
	scripts/test

lint:
	scripts/setup && .venv/bin/ruff check src tests benchmarks && .venv/bin/mypy && .venv/bin/lint-imports --no-cache

bench:
	scripts/setup && benchmarks/setup-peers
	.venv/bin/python benchmarks/exposure/run.py
	.venv/bin/python benchmarks/secrets/run.py
	.venv/bin/python benchmarks/secrets/git_history.py
	.venv/bin/python benchmarks/secrets/credsweeper.py
	.venv/bin/python benchmarks/container/run.py
	benchmarks/workload/setup
	.venv/bin/python benchmarks/workload/run.py
	.venv/bin/python benchmarks/storage/run.py
	.venv/bin/python benchmarks/storage/upload_latency.py
