"""The report service over HTTP: submit, poll, download (mounted by ``tracker serve`` under
``/api/v1`` with the API's access rules: reading needs a viewer, submitting an operator).

Submitting enqueues through the service's own publisher, as ``POST /api/v1/tasks`` does;
status and documents are read from the tracker's records. The contract is the report
clients', pinned: 202/200 on submit, 400 for a request that is not valid (as everywhere in
the API), 404/409/410 on download. Errors are the API's ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

import tracker
from consumers.report_files import ReportFiles
from consumers.report_request import (
    FORMATS,
    MAX_ROWS,
    MAX_SEED,
    MAX_SLOW_SECONDS,
    REGIONS,
    SIMULATIONS,
    is_report_id,
    submit,
)
from consumers.report_request import Request as ReportRequest
from consumers.report_status import FAIL, RUNNING, SEED_STATUS, Report, find_report
from tracker.web.access import api_operator
from tracker.web.api.timestamps import Timestamp
from tracker.web.context import operator_of

CONTENT_TYPES: Final = {
    "csv": "text/csv; charset=utf-8",
    "pdf": "application/pdf",
    "txt": "text/plain; charset=utf-8",
}
REQUEST_SCHEMA: Final = {
    "type": "object",
    "required": ["params"],
    "additionalProperties": False,
    "properties": {
        "params": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "region": {"enum": list(REGIONS)},
                "rows": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": max(MAX_ROWS.values()),
                    "description": f"at most {MAX_ROWS['pdf']} for pdf",
                },
                "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
                "simulate": {"enum": list(SIMULATIONS)},
                "seconds": {"type": "number", "minimum": 0, "maximum": MAX_SLOW_SECONDS},
            },
        },
        "format": {"enum": list(FORMATS), "default": "csv"},
    },
}


class Submitted(BaseModel):
    id: str
    status: Literal["RUNNING", "SUCCESS", "FAIL"]


class ReportView(BaseModel):
    id: str
    status: Literal["RUNNING", "SUCCESS", "FAIL"]
    error: str | None = Field(None, description="why it failed (FAIL only)")
    attempts: int
    format: str | None
    created_at: Timestamp
    finished_at: Timestamp | None = Field(None, description="when it succeeded or failed")


def _invalid(reason: str) -> HTTPException:
    return HTTPException(400, reason)


async def _request_of(request: Request) -> ReportRequest:
    """The report request in the body; 400 with the reason when it is not one."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _invalid("the body must be JSON, sent as content-type: application/json")
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):  # not JSON, bad UTF-8, too deep, a huge number
        raise _invalid("the body is not valid JSON") from None
    try:
        return ReportRequest.parse(body)
    except tracker.ValidationError as error:
        raise _invalid(str(error)) from None


async def _report(report_id: str, queue: str) -> Report:
    """The report, or 404 (an id that is not a report id is no report either)."""
    found = await find_report(report_id, queue) if is_report_id(report_id) else None
    if found is None:
        raise HTTPException(404, "no such report (never requested, or removed by retention)")
    return found


def router(queue: str, files: ReportFiles) -> APIRouter:
    """The report routes for reports made on ``queue`` into ``files``."""
    api = APIRouter(tags=["reports"])

    @api.post(
        "/reports",
        status_code=202,
        summary="Request a report (operator); an identical request returns the same id",
        response_model=Submitted,
        responses={200: {"model": Submitted, "description": "deduplicated, already finished"}},
        dependencies=[Depends(api_operator)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": REQUEST_SCHEMA}},
            }
        },
    )
    async def request_report(request: Request) -> JSONResponse:
        wanted = await _request_of(request)
        enqueuer = await operator_of(request).enqueuer()
        result = await submit(enqueuer, wanted.params, wanted.fmt, queue)
        status = SEED_STATUS[result.status]
        return JSONResponse(
            {"id": result.task_id, "status": status}, status_code=202 if status == RUNNING else 200
        )

    @api.get(
        "/reports/{report_id}",
        summary="A report's status",
        response_model=ReportView,
        response_model_exclude_none=True,
    )
    async def report_status(report_id: str) -> dict[str, Any]:
        return (await _report(report_id, queue)).view()

    @api.get(
        "/reports/{report_id}/download",
        summary="A finished report's document",
        response_class=StreamingResponse,
        responses={
            409: {"description": "still running, or failed: there is no document"},
            410: {"description": "the record is kept, its file is removed"},
        },
    )
    async def download(report_id: str) -> StreamingResponse:
        report = await _report(report_id, queue)
        if report.status == RUNNING:
            raise HTTPException(409, "the report is still running: poll its status")
        if report.status == FAIL:
            raise HTTPException(409, f"the report failed: {report.error or 'no document'}")
        execution, fmt = report.execution, report.format
        path = None
        if fmt is not None:  # a thread: the directory may be a network volume
            path = await asyncio.to_thread(
                files.servable, execution.task_id, execution.execution_id, fmt
            )
        # Opened here, not by name when the body is sent: a file the sweeper removes in
        # between is a 410, never a half-sent 500 (an open file outlives its unlinking).
        handle = None if fmt is None or path is None else await asyncio.to_thread(_open, path)
        if fmt is None or handle is None:
            raise HTTPException(410, "the report's file is gone: request the report again")
        name = f"{report_id.replace(':', '-')}.{fmt}"
        return StreamingResponse(
            _chunks(handle),
            media_type=CONTENT_TYPES[fmt],
            headers={
                "content-disposition": f'attachment; filename="{name}"',
                "content-length": str(os.fstat(handle.fileno()).st_size),
            },
        )

    return api


CHUNK_BYTES: Final = 64 * 1024


def _open(path: Path) -> BinaryIO | None:
    """``path`` opened for reading, never through a link; None when it is gone."""
    try:
        return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
    except (FileNotFoundError, OSError):
        return None


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()
