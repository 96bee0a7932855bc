#!/usr/bin/env bash
# Start the local RabbitMQ if it is not answering, and wait until it does.
set -euo pipefail
if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null; then
  echo "RabbitMQ is not installed; install it (apt-get install -y rabbitmq-server) or set TRACKER_AMQP_URL" >&2
  exit 1
fi
echo "starting RabbitMQ" >&2
rabbitmq-server -detached
for _ in $(seq 90); do
  rabbitmq-diagnostics -q ping >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "RabbitMQ did not start within 90 s" >&2
exit 1
