# rbmrec: the API, the worker and the CLI in one image.
#
#   docker build -t rbmrec .                     (or: docker compose build)
#   docker run --rm rbmrec rbmrec --help
#
# Stage 1 builds wheels and a virtual environment; stage 2 copies only the environment
# onto a clean python:3.11-slim, so no compiler, pip cache or source tree ships.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# The dependencies come from pyproject.toml alone, so this layer (the slow one) is
# rebuilt only when pyproject.toml changes, not on every source edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip wheel --wheel-dir /wheels -r requirements.txt \
    && python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-index --find-links /wheels -r requirements.txt

# The project itself, as a wheel without its dependencies (they are installed above).
COPY README.md ./
COPY app ./app
COPY rbm_core ./rbm_core
RUN pip wheel --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="rbmrec" \
      org.opencontainers.image.description="RBM recommender service: API, retrain worker, CLI" \
      org.opencontainers.image.licenses="MIT"

ARG APP_UID=10001
ARG APP_GID=10001

# The API binds all interfaces inside the container (the host decides what to publish);
# artifacts go to /var/lib/rbmrec/models, which compose mounts as a named volume. A new
# named volume copies this directory's owner, so the non-root user can write to it.
# On 0.0.0.0 `rbmrec serve` refuses to run without API keys: pass them
# (-e RBMREC_ADMIN_API_KEYS=... -e RBMREC_API_KEYS=... -e RBMREC_READ_API_KEYS=...) or,
# for an open API on purpose, -e RBMREC_ALLOW_OPEN=true. The image sets neither.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RBMREC_HOST=0.0.0.0 \
    RBMREC_PORT=8000 \
    RBMREC_MODEL_DIR=/var/lib/rbmrec/models

RUN groupadd --system --gid "${APP_GID}" rbmrec \
    && useradd --system --uid "${APP_UID}" --gid rbmrec --create-home \
        --home-dir /home/rbmrec --shell /usr/sbin/nologin rbmrec \
    && mkdir -p /var/lib/rbmrec/models \
    && chown -R rbmrec:rbmrec /var/lib/rbmrec

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /dist /tmp/dist
# The base image's pip installs into the venv, which carries no pip of its own.
RUN pip --python /opt/venv/bin/python install --no-index --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist

# `rbmrec db upgrade` finds the Alembic scripts in ./migrations (app/db/migrate.py).
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations

USER rbmrec:rbmrec
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('RBMREC_PORT', '8000'), timeout=4)"]

CMD ["rbmrec", "serve"]
