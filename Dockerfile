# The worker image: the `jobs` package, the route table it shares with the Pulumi program
# (`contract`) and their runtime dependencies, nothing else. No pulumi,
# no infra/ (see .dockerignore): the Pulumi program never runs here. ECS gives each worker
# group its command, environment and secrets (infra/workers.py); the defaults below match.
FROM python:3.11-slim-bookworm

# REMAP_SIGTERM is Celery's: ECS's SIGTERM starts the bounded soft shutdown rather than an
# unbounded warm one. The worker touches AMPLY_HEARTBEAT_FILE from its event loop and the
# health check reads its age (docs/contract.md).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REMAP_SIGTERM=SIGQUIT \
    AMPLY_HEARTBEAT_FILE=/tmp/amply-worker.heartbeat

# Runtime dependencies only: pyproject's [project] dependencies, no extras. pycurl ships
# manylinux wheels with libcurl inside, so no compiler or system package is needed.
COPY pyproject.toml /src/
COPY contract /src/contract
COPY jobs /src/jobs
RUN pip install --no-cache-dir /src \
    && rm -rf /src \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin amply

WORKDIR /srv
USER 10001:10001

# Same check as the ECS task definition's (infra/workers.py HEALTH_CHECK).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "jobs.runtime.healthcheck", "--max-age", "60"]

# ECS overrides it per worker group (-Q, -c); alone, the image consumes every tier.
CMD ["celery", "-A", "jobs.runtime.app", "worker", "-Q", "high,celery,low", "-c", "2", "--loglevel=info"]
