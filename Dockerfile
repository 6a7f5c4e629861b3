# syntax=docker/dockerfile:1
# collector: Prometheus sidecar. Build: docker build -t collector .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY collector ./collector
RUN python -m venv /opt/collector \
 && /opt/collector/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/collector/bin/pip install --no-cache-dir .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="collector" \
      org.opencontainers.image.description="Prometheus sidecar: app logs, Stripe, GitHub DORA, WebSocket probes and process metrics" \
      org.opencontainers.image.licenses="MIT"
RUN useradd --system --uid 10001 --home-dir /var/lib/collector --create-home collector
COPY --from=build /opt/collector /opt/collector
ENV PATH=/opt/collector/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    COLLECTOR_DATA_DIR=/var/lib/collector
USER 10001
WORKDIR /var/lib/collector
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/health/live', timeout=2).status == 200 else 1)"]
# Exec form: SIGTERM reaches Python directly, which flushes state and exits 0.
ENTRYPOINT ["collector"]
CMD ["run"]
