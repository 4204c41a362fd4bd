# FaceMoment image: the project installed the same way the README does.
FROM python:3.11-slim

# OpenCV's wheel links against libGL and GLib; jq serves the trace recipes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 jq \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY facemoment ./facemoment
COPY dataflows ./dataflows
COPY operators ./operators
COPY connectors ./connectors
RUN python -m venv /app/.venv && /app/.venv/bin/pip install --no-cache-dir -e . \
    && /app/.venv/bin/facemoment sample

ENV PATH="/app/.venv/bin:$PATH" \
    FACEMOMENT_CACHE_DIR=/root/.cache/facemoment \
    PYTHONUNBUFFERED=1
