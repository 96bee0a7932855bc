"""Report documents on disk: one directory, a file per execution, released by the sweeper
before the record expires (410 between the two, 404 after), and never a path outside the
directory whatever the id (dot segments, absolute paths, links, NUL, encoded separators)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import reports
from consumers.report_files import ReportFiles, plain_name
from tests.report_helpers import RecordingTransport, finished_report, report_api_client
from tracker.delivery.outcomes import Outcomes
from tracker.models import TaskTracker
from tracker.service.sweeper import Sweeper
from tracker.store import connection

QUEUE = reports.QUEUE
SECRET = "the secret outside the reports directory"


@pytest.fixture
def files(tmp_path: Path) -> ReportFiles:
    return ReportFiles(tmp_path / "reports")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.csv"
    path.write_text(SECRET)
    return path


def sweeper(files: ReportFiles, release_ahead: float) -> Sweeper:
    consumer = reports.consumer(QUEUE, files)
    return Sweeper(
        {QUEUE: Outcomes(consumer, "test-worker")},
        RecordingTransport().publish,
        release_ahead=release_ahead,
    )


# --- the setting ----------------------------------------------------------------------------


def test_the_directory_is_tracker_reports_dir_else_the_old_name_with_a_warning() -> None:
    # Given / When / Then
    assert ReportFiles.from_env({"TRACKER_REPORTS_DIR": "/data/r"}).root == Path("/data/r")
    assert ReportFiles.from_env({}).root == Path("reports-output")
    with pytest.warns(DeprecationWarning, match="REPORTS_OUTPUT_DIR is renamed"):
        assert ReportFiles.from_env({"REPORTS_OUTPUT_DIR": "/old"}).root == Path("/old")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = {"TRACKER_REPORTS_DIR": "/new", "REPORTS_OUTPUT_DIR": "/old"}
        assert ReportFiles.from_env(both).root == Path("/new")


@settings(deadline=None)
@given(st.text(max_size=300))
def test_any_id_becomes_one_plain_path_component(value: str) -> None:
    # When
    name = plain_name(value)
    # Then: one component, no separator, no dot segment, no NUL
    assert name
    assert "/" not in name
    assert "\x00" not in name
    assert "\\" not in name
    assert name not in (".", "..")
    assert not name.startswith(".")
    assert len(name) <= 80


def test_paths_are_built_from_the_ids_inside_the_directory(files: ReportFiles) -> None:
    # Given
    hostile = ["../../etc/passwd", "/etc/passwd", "a\x00b", "reports:..%2F..", "..", "x/../../y"]
    for task_id in hostile:
        for execution_id in hostile:
            # When
            path = files.document(task_id, execution_id, "csv")
            # Then
            assert path.parent.parent == files.root
            assert ".." not in path.parts
            assert "\x00" not in str(path)


# --- release before expiry: 410, then 404 ------------------------------------------------------


@pytest.mark.usefixtures("store")
async def test_the_sweeper_removes_a_document_before_its_record_expires(
    files: ReportFiles,
) -> None:
    # Given: a finished report whose record expires in 10 minutes, another in a week
    soon = await finished_report(files, {"rows": 10}, retention=600)
    later = await finished_report(files, {"rows": 20}, retention=7 * 86400)
    soon_file = files.document(soon.task_id, soon.execution_id, "csv")
    later_file = files.document(later.task_id, later.execution_id, "csv")
    assert soon_file.is_file()
    assert later_file.is_file()

    # When: a sweep that releases what expires within the hour, twice
    first = await sweeper(files, release_ahead=3600).sweep()
    second = await sweeper(files, release_ahead=3600).sweep()

    # Then: the first document and its folder are gone, its record is kept and marked once
    assert (first.released, second.released) == (1, 0)
    assert not soon_file.exists()
    assert not soon_file.parent.exists()
    assert later_file.is_file()
    record = await TaskTracker.find_execution(soon.execution_id)
    assert record is not None
    assert record.released_at is not None
    assert record.expires_at is not None
    assert record.released_at < record.expires_at


@pytest.mark.usefixtures("store")
async def test_download_is_410_once_the_file_is_gone_and_404_once_the_record_is(
    files: ReportFiles,
) -> None:
    # Given: a finished report
    done = await finished_report(files, {"rows": 10}, retention=60)
    async with report_api_client(QUEUE, files) as api:
        url = f"/api/v1/reports/{done.task_id}"
        before = await api.get(f"{url}/download")

        # When: the sweeper releases the file, then retention removes the record (as
        # MongoDB's TTL monitor does once expiresAt has passed)
        await sweeper(files, release_ahead=3600).sweep()
        released = await api.get(f"{url}/download")
        status_released = await api.get(url)
        await connection.collection().delete_many({"taskId": done.task_id})
        gone = await api.get(f"{url}/download")
        status_gone = await api.get(url)

    # Then
    assert before.status_code == 200
    assert before.text.splitlines()[0] == ",".join(reports.COLUMNS)
    assert released.status_code == 410
    assert released.json() == {"error": "the report's file is gone: request the report again"}
    assert status_released.json()["status"] == "SUCCESS"
    assert (gone.status_code, status_gone.status_code) == (404, 404)


@pytest.mark.usefixtures("store")
async def test_a_file_removed_between_the_check_and_the_send_is_410(
    files: ReportFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a finished report whose file the sweeper removes right after it was found
    done = await finished_report(files, {"rows": 10}, retention=60)
    real = ReportFiles.servable

    def found_then_removed(self: ReportFiles, task_id: str, execution_id: str, fmt: str) -> Any:
        path = real(self, task_id, execution_id, fmt)
        assert path is not None
        path.unlink()
        return path

    monkeypatch.setattr(ReportFiles, "servable", found_then_removed)
    # When
    async with report_api_client(QUEUE, files) as api:
        response = await api.get(f"/api/v1/reports/{done.task_id}/download")
    # Then: the answer a removed file gets, not a server error
    assert response.status_code == 410
    assert response.json() == {"error": "the report's file is gone: request the report again"}


@pytest.mark.usefixtures("store")
async def test_a_release_that_fails_is_tried_again_at_the_next_sweep(
    files: ReportFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a document about to expire, and a disk that refuses the first removal
    done = await finished_report(files, {"rows": 10}, retention=60)
    calls: list[str] = []
    real = ReportFiles._remove

    def refuse_once(self: ReportFiles, task_id: str, execution_id: str) -> None:
        calls.append(execution_id)
        if len(calls) == 1:
            raise PermissionError("read-only file system")
        real(self, task_id, execution_id)

    monkeypatch.setattr(ReportFiles, "_remove", refuse_once)

    # When
    first = await sweeper(files, release_ahead=3600).sweep()
    second = await sweeper(files, release_ahead=3600).sweep()

    # Then: not marked the first time, released the second
    assert (first.released, second.released) == (0, 1)
    assert calls == [done.execution_id, done.execution_id]
    assert not files.document(done.task_id, done.execution_id, "csv").exists()


@pytest.mark.usefixtures("store")
async def test_a_newer_run_keeps_its_document_when_an_older_one_is_released(
    files: ReportFiles,
) -> None:
    # Given: two runs of the same report (the second after the dedupe window), the older
    # expiring first
    older = await finished_report(files, {"rows": 10}, retention=60)
    newer = await finished_report(files, {"rows": 10}, retention=7 * 86400)
    assert newer.task_id == older.task_id
    assert newer.execution_id != older.execution_id

    # When
    await sweeper(files, release_ahead=3600).sweep()

    # Then: the newer run's document is still served
    assert not files.document(older.task_id, older.execution_id, "csv").exists()
    async with report_api_client(QUEUE, files) as api:
        response = await api.get(f"/api/v1/reports/{newer.task_id}/download")
    assert response.status_code == 200


# --- hostile ids and links ---------------------------------------------------------------------


@pytest.mark.usefixtures("store")
async def test_hostile_ids_in_the_url_never_reach_a_file(files: ReportFiles, secret: Path) -> None:
    # Given: a finished report, so that the directory and the route have something to serve
    await finished_report(files, {"rows": 10})
    ids = [
        "..",
        "../secret.csv",
        "..%2Fsecret.csv",
        "%2e%2e%2fsecret.csv",
        "%2e%2e",
        quote(str(secret), safe=""),
        "%2Fetc%2Fpasswd",
        "reports:0123456789abcdef%00",
        "reports%3A0123456789abcdef%2F..%2F..",
        "reports:0123456789ABCDEF",
        "reports:0123456789abcdef0",
        "%00",
        "%5c..%5csecret.csv",
    ]
    async with report_api_client(QUEUE, files) as api:
        for value in ids:
            for path in (f"/api/v1/reports/{value}", f"/api/v1/reports/{value}/download"):
                # When
                response = await api.get(path)
                # Then
                assert response.status_code in (404, 405), (path, response.status_code)
                assert SECRET not in response.text


@pytest.mark.usefixtures("store")
@pytest.mark.parametrize("link", ["document", "folder"])
async def test_a_link_in_place_of_a_document_or_its_folder_is_never_followed(
    files: ReportFiles, secret: Path, link: str
) -> None:
    # Given: a finished report whose file (or whole folder) is replaced by a link to outside
    done = await finished_report(files, {"rows": 10})
    document = files.document(done.task_id, done.execution_id, "csv")
    if link == "document":
        document.unlink()
        document.symlink_to(secret)
    else:
        outside = secret.parent / "outside"
        outside.mkdir()
        os.replace(secret, outside / document.name)
        document.unlink()
        document.parent.rmdir()
        document.parent.symlink_to(outside, target_is_directory=True)

    # When
    async with report_api_client(QUEUE, files) as api:
        response = await api.get(f"/api/v1/reports/{done.task_id}/download")

    # Then: the file counts as gone; nothing of the target is sent
    assert response.status_code == 410
    assert SECRET not in response.text


@pytest.mark.usefixtures("store")
async def test_a_release_never_removes_anything_outside_the_directory(
    files: ReportFiles, secret: Path
) -> None:
    # Given: a record whose ids are hostile, and a link to outside where its document goes
    done = await finished_report(files, {"rows": 10}, retention=60)
    await connection.collection().update_one(
        {"executionId": done.execution_id}, {"$set": {"executionId": "../../secret"}}
    )
    hostile = files.document(done.task_id, "../../secret", "csv")
    hostile.symlink_to(secret)

    # When
    swept = await sweeper(files, release_ahead=3600).sweep()

    # Then: the link is removed, its target is not
    assert swept.released == 1
    assert not hostile.is_symlink()
    assert secret.read_text() == SECRET


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(min_size=1, max_size=300).filter(lambda s: s not in (".", "..")))
@pytest.mark.usefixtures("store")
async def test_any_id_is_answered_without_a_server_error_or_a_file(
    files: ReportFiles, secret: Path, value: str
) -> None:
    async with report_api_client(QUEUE, files) as api:
        for suffix in ("", "/download"):
            response = await api.get(f"/api/v1/reports/{quote(value, safe='')}{suffix}")
            # An id with a "/" decodes to another path: 404 or 405 there, or 307 for a
            # trailing slash (redirected without it, to POST /reports).
            assert response.status_code in (307, 404, 405), (value, response.text)
            assert SECRET not in response.text


def test_the_image_has_the_pdf_font_and_the_reports_directory() -> None:
    # Given
    from consumers import report_pdf

    dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    # Then: Debian's DejaVu package, where report_pdf looks first, and the directory setting
    assert "fonts-dejavu-core" in dockerfile
    assert report_pdf.FONT_SEARCH_PATHS[0] == Path(
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )
    assert "TRACKER_REPORTS_DIR=/data/reports" in dockerfile
    assert "REPORTS_OUTPUT_DIR" not in dockerfile
