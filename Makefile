# The two commands of the README: `make run` and `make test`. Both set everything up first.
.PHONY: setup run test lint unit bench lab-down agent-image

setup:
	@./scripts/setup.sh

# Bring up a 3-node lab and open the console on it; the lab goes down on exit unless KEEP_LAB=1.
run: setup
	@./scripts/run.sh

# Lint, type-check and the whole test suite (the lab tests need root; CI runs as root).
test: setup lint
	.venv/bin/pytest -ra

lint: setup
	.venv/bin/ruff check lifsea_tui tests benchmarks
	.venv/bin/ruff format --check lifsea_tui tests benchmarks
	.venv/bin/mypy

bench:
	@./scripts/setup.sh --bench
	.venv/bin/python -m benchmarks.agent
	.venv/bin/python -m benchmarks.ops_shell
	.venv/bin/python -m benchmarks.echo_hops
	.venv/bin/python -m benchmarks.services_logs
	.venv/bin/python -m benchmarks.rollout

lab-down: setup
	.venv/bin/lifsea-lab down

# The agent as a container image (an OCI layout in build/agent-image), from a clean tree: see README.
agent-image: setup
	.venv/bin/python -m lifsea_tui.agentimage build --out build/agent-image
