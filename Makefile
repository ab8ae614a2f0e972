# The two commands a new user needs. Each does its own set-up.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# System services the integration tests start themselves (redis-server, prometheus/promtool,
# docker-compose for validating the compose files) and the browser the playground tests drive (Debian's
# chromium, through Playwright: its own browser download needs internet); installed when missing and
# running as root.
system-deps:
	@missing=""; \
	for bin in redis-server prometheus promtool docker-compose chromium; do \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$bin"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages for:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server prometheus docker-compose chromium; \
	  else echo "missing:$$missing (install redis-server, prometheus, docker-compose, chromium)"; exit 1; fi; fi

serve: $(STAMP)
	$(VENV)/bin/gram serve --host 127.0.0.1 --port 8000

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q
