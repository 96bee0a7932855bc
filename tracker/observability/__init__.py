"""Prometheus metrics and the background queue-statistics collector (the HTTP endpoint that
serves them is ``tracker.web``)."""

from __future__ import annotations

from tracker.observability.collector import QueueStatsCollector
from tracker.observability.metrics import MetricsMiddleware, TrackerMetrics

__all__ = ["MetricsMiddleware", "QueueStatsCollector", "TrackerMetrics"]
