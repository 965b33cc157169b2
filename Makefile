# The two commands of the README, plus a few for development.
.PHONY: demo test lint unit integration e2e bench clean image dev-stack

PY := .venv/bin/python
PYTEST := $(PY) -m pytest

demo:  ## set up this machine and run the demo
	bash .ci/demo.sh

test:  ## set up this machine, lint (ruff, mypy), run every test (unit, integration, e2e)
	SHOAL_TEST_DEPS=1 bash .ci/setup.sh
	$(PY) -m ruff check .
	$(PY) -m mypy core services
	$(PYTEST) -p no:cacheprovider

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy core services

unit:
	$(PYTEST) tests/unit

integration:
	$(PYTEST) tests/integration

e2e:
	$(PYTEST) tests/e2e

bench:  ## print performance figures (see tests/benchmarks)
	for b in tests/benchmarks/bench_*.py; do m=$$(echo $${b%.py} | tr / .); echo "== $$m"; $(PY) -m $$m || exit 1; done

image:  ## the Shoal image shoal:dev, built once from wheels (no registry needed)
	SHOAL_DEV_BUILD_ONLY=1 bash .ci/dev-stack.sh

dev-stack:  ## compose.dev.yml: build, bring up, deploy the demo on it, check it serves
	bash .ci/dev-stack.sh

clean:  ## remove containers of every Shoal cluster on this engine
	docker ps -aq --filter label=shoal.managed=true | xargs -r docker rm -f
