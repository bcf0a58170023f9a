# syntax=docker/dockerfile:1
# modelstream: one image for every service.
#
#   docker build -t modelstream:local .
#   docker run --rm -e MODELSTREAM_KAFKA_BOOTSTRAP=broker:9092 \
#       -e MODELSTREAM_REDIS_URL=redis://redis:6379/0 modelstream:local run ingest
#
# The entry point is the `modelstream` CLI; the default command runs the predict service.
# Every setting is an environment variable MODELSTREAM_<NAME> (services/runtime/settings.py).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a virtualenv ------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Every dependency ships a manylinux wheel for CPython 3.11, so no compiler is needed.
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY services ./services
RUN pip install --upgrade pip \
 && pip install . \
 && modelstream --help > /dev/null

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="modelstream" \
      org.opencontainers.image.description="Deploy and monitor machine-learning models on Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

# Containers listen on every address (Prometheus scrapes them from outside); the artifact
# store is a mounted volume at /artifacts.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELSTREAM_METRICS_HOST=0.0.0.0 \
    MODELSTREAM_DATA_DIR=/var/lib/modelstream \
    MODELSTREAM_ARTIFACT_DIR=/artifacts

# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can verify it and fsGroup can match.
# /artifacts is owned by it: a named volume mounted there starts with that ownership, so the
# model initialiser can write the store.
RUN groupadd --system --gid 10001 modelstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/modelstream --create-home \
        --shell /usr/sbin/nologin modelstream \
 && mkdir -p /artifacts /var/lib/modelstream \
 && chown 10001:10001 /artifacts /var/lib/modelstream

COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/bin/modelstream-healthcheck

WORKDIR /var/lib/modelstream
USER 10001:10001

# /metrics, /healthz and /readyz: ingest 9301, predict 9302 (MODELSTREAM_METRICS_PORT overrides).
EXPOSE 9300 9301 9302 9303 9304 9305

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/modelstream-healthcheck", "/healthz"]

ENTRYPOINT ["modelstream"]
CMD ["run", "predict"]
