# syntax=docker/dockerfile:1
#
# Targets:
#   gateway  (default, last stage)  the gateway: app/ + config/ on the runtime requirements
#   emulator                        the Alpaca emulator (tests/emulator) for the compose demo
#
#   docker build -t alpaca-gateway .
#   docker build --target emulator -t alpaca-gateway-emulator .

# --- builder: the runtime requirements in a self-contained venv ------------------------------
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

# --- base: what both images share --------------------------------------------------------------
FROM python:3.11-slim AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /srv/gateway gateway
WORKDIR /srv/gateway
COPY --from=builder /opt/venv /opt/venv

# --- emulator: Alpaca stand-in for `docker compose --profile demo` ----------------------------
FROM base AS emulator
COPY --chown=root:root tests/__init__.py tests/__init__.py
COPY --chown=root:root tests/emulator/ tests/emulator/
USER gateway
EXPOSE 8766
CMD ["python", "-m", "tests.emulator", "--host", "0.0.0.0", "--port", "8766"]

# --- gateway (default) -------------------------------------------------------------------------
FROM base AS gateway
# Code owned by root and read-only for the service user; config/ carries .env.example only
# (.dockerignore keeps config/.env and its secrets out of the image: pass settings as env).
COPY --chown=root:root app/ app/
COPY --chown=root:root config/ config/
ENV LOG_JSON=true \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000
USER gateway
EXPOSE 8000
# python:3.11-slim has no curl: probe /health with the standard library.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
# One worker per container by default (ops-notes 1.8; GATEWAY_WORKERS to change it); the server
# is granian unless GATEWAY_SERVER=uvicorn; the app logs access itself.
CMD ["python", "-m", "app.serve"]
