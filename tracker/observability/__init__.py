"""Prometheus metrics, the background queue-statistics collector and the HTTP endpoint."""

from __future__ import annotations

from tracker.observability.collector import QueueStatsCollector
from tracker.observability.http import MetricsServer
from tracker.observability.metrics import MetricsMiddleware, TrackerMetrics

__all__ = ["MetricsMiddleware", "MetricsServer", "QueueStatsCollector", "TrackerMetrics"]
