# The tracker service: `tracker serve consumers.reports`, metrics and health on :9464.
#   docker build -t rabbitmq-task-tracker .
# Your own consumer module: an image FROM this one that copies the module into the working
# directory, /app, where `tracker serve` imports it from (docs/deploy.md, "Your own consumer
# module"), e.g. CMD ["tracker", "serve", "myconsumer"].
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

RUN pip install --no-cache-dir uv
# DejaVu Sans for the PDF reports (consumers/report_pdf.py): the PDF core fonts draw Latin-1 only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, from the lock file, so code changes do not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra speed --no-install-project
COPY tracker ./tracker
COPY consumers ./consumers
RUN uv sync --frozen --no-dev --extra speed

RUN useradd --create-home --uid 10001 tracker \
    && mkdir -p /data/reports \
    && chown tracker /data/reports
USER tracker

ENV PATH="/app/.venv/bin:$PATH" \
    TRACKER_LOG_FORMAT=json \
    TRACKER_HTTP_PORT=9464 \
    TRACKER_HTTP_HOST=0.0.0.0 \
    TRACKER_REPORTS_DIR=/data/reports

EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["tracker", "serve", "consumers.reports"]
