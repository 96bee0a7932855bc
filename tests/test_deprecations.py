"""Renamed settings keep working for one minor version, with a ``DeprecationWarning`` that
names the new name (the rule in CHANGELOG.md); the new name wins when both are set."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.report_files import ReportFiles
from tracker.settings import Settings


def test_the_old_http_port_variable_is_read_with_a_warning() -> None:
    # When
    with pytest.warns(DeprecationWarning, match="renamed TRACKER_HTTP_PORT"):
        settings = Settings.from_env({"TRACKER_METRICS_PORT": "9100"})
    # Then
    assert settings.http_port == 9100


def test_the_new_http_port_variable_wins_without_a_warning() -> None:
    settings = Settings.from_env({"TRACKER_HTTP_PORT": "9200", "TRACKER_METRICS_PORT": "9100"})
    assert settings.http_port == 9200


def test_the_old_settings_attribute_is_read_with_a_warning() -> None:
    settings = Settings.from_env({"TRACKER_HTTP_PORT": "9300"})
    with pytest.warns(DeprecationWarning, match="service_http_port"):
        assert settings.metrics_port == settings.service_http_port == 9300


def test_the_old_reports_directory_variable_is_read_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match="renamed TRACKER_REPORTS_DIR"):
        files = ReportFiles.from_env({"REPORTS_OUTPUT_DIR": str(tmp_path)})
    assert files.root == tmp_path
    both = ReportFiles.from_env(
        {"TRACKER_REPORTS_DIR": str(tmp_path / "new"), "REPORTS_OUTPUT_DIR": str(tmp_path)}
    )
    assert both.root == tmp_path / "new"
