"""A report service for the `tracker serve` test: the report consumer and its routes on a
queue and a directory from the environment, so the test never touches the real "reports"."""

from __future__ import annotations

import os
from pathlib import Path

from consumers import report_api, reports
from consumers.report_files import ReportFiles

QUEUE = os.environ["SERVE_TEST_QUEUE"]
FILES = ReportFiles(Path(os.environ["SERVE_TEST_REPORTS_DIR"]))

CONSUMERS = [reports.consumer(QUEUE, FILES, timeout=60)]
ROUTER = report_api.router(QUEUE, FILES)
