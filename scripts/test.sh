#!/usr/bin/env bash
# Installs everything the tests use and runs them (README's test command; .ci/run calls it).
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools the tests drive: jq (the trace recipes), docker-compose (validating
# docker-compose.yml without a Docker engine), chromium and its chromedriver (the review
# page in a real browser). Debian's packages; root or sudo needed.
missing=()
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest -q "$@"
