# syntax=docker/dockerfile:1
# collector: Prometheus sidecar for web apps. Build: docker build -t collector:latest .
# Stage 1 builds a virtualenv with the collector and its dependencies; stage 2 copies only that venv
# onto a slim Python base and runs it as an unprivileged user.
# The base image is pinned by digest (an image index: amd64 and arm64), so a rebuild gets the same bytes.
# To bump it: `docker buildx imagetools inspect python:3.11-slim` (or `crane digest python:3.11-slim`)
# prints the tag's current index digest; put it in both FROM lines, rebuild, and run `make test`.

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Exactly the tested versions: every artifact checked against the lock's hashes, nothing resolved here.
COPY requirements/runtime.txt ./requirements/
RUN python -m venv /opt/collector \
 && /opt/collector/bin/pip install --require-hashes --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY collector ./collector
# setuptools (the build backend, pinned in the lock) is not needed at run time.
RUN /opt/collector/bin/pip install --no-deps --no-build-isolation . \
 && /opt/collector/bin/pip uninstall --yes setuptools

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="collector" \
      org.opencontainers.image.description="Prometheus sidecar: app logs, Stripe, GitHub DORA, WebSocket probes and process metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.documentation="docs/deploying.md"
# /var/log/app exists owned by the user so a fresh named volume mounted there is writable (compose demo).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/collector --create-home collector \
 && install -d -o 10001 -g 10001 /var/log/app
COPY --from=build /opt/collector /opt/collector
# No .pyc writes (the root filesystem may be read-only); logs go straight to stderr; state on a volume.
ENV PATH=/opt/collector/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    COLLECTOR_LISTEN=0.0.0.0:9464 \
    COLLECTOR_DATA_DIR=/var/lib/collector
USER 10001:10001
WORKDIR /var/lib/collector
VOLUME ["/var/lib/collector"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/health/live', timeout=2).status == 200 else 1)"]
# Exec form: SIGTERM reaches Python directly, which stops the sources, flushes state and exits 0.
ENTRYPOINT ["collector"]
CMD ["run"]
