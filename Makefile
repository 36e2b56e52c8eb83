# leadrank: `make run` starts everything, `make test` runs the suite (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000
export PORT

.PHONY: install run test lint format bench bench-ingest bench-claim bench-model simulate

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "leadrank needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Development / demo start: DEBUG on unless set, embedded PostgreSQL unless DATABASE_URL,
# filesystem broker unless CELERY_BROKER_URL.
run: install
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py run --port $(or $(PORT),8000)

test: install
	DJANGO_DEBUG=$${DJANGO_DEBUG:-false} SECRET_KEY=$${SECRET_KEY:-test-only-secret} $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DJANGO_DEBUG=true $(VENV)/bin/mypy .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: bench-ingest bench-claim bench-model

bench-ingest: install
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py bench ingest $(BENCH_ARGS)

# Needs wrk (`apt-get install -y wrk`) and pgbench/psql (postgresql-client) on the PATH.
bench-claim: install
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py bench claim $(BENCH_ARGS)

# Learned-model evaluation on the X Education leads (Lead Number order as time).
# The file has no customers: Lead Origin (API, landing page, lead add form, import, quick add) plays
# them, so the per-customer model is tested against the pooled one. Then the training time
# of 1M synthetic outcomes (TRAINING_OUTCOMES=100000 for a quicker run).
bench-model: install
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py evaluate_model --file "$${LEADRANK_DATA_DIR:-../shared/data}/x_education_leads/Leads.csv" --target Converted --order-by "Lead Number" --features "Lead Source,City,Last Activity,Lead Origin" --customer-column "Lead Origin" $(MODEL_ARGS)
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py evaluate_model --bench-training $${TRAINING_OUTCOMES:-1000000}

# The README's headline policy comparison (FIFO vs the default policy) on the real arrival log.
simulate: install
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py simulate $(SIM_ARGS)
