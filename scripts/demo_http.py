"""The demo's HTTP part: the report service as its clients use it, each request printed as
the curl command that does the same, then its answer.

Submits a PDF report, submits it again (the same id back), polls it to SUCCESS, downloads
it; submits one whose partner stays down and polls it to FAIL with its message (its
download is a 409); shows a request refused with 400; asks for the first report once more
(200, SUCCESS, the same id).
"""

from __future__ import annotations

import asyncio
import io
import json
import shlex
import time
from collections.abc import Callable
from typing import Any

import httpx
from pypdf import PdfReader

Say = Callable[[str], None]
FINAL = ("SUCCESS", "FAIL")


class Client:
    """An HTTP client that prints each request as curl and each answer."""

    def __init__(self, http: httpx.AsyncClient, token: str | None, say: Say) -> None:
        self.http = http
        self.token = token
        self.say = say

    def _curl(self, method: str, path: str, body: Any = None, save: bool = False) -> None:
        parts = ["curl", "-s"] + (["-OJ"] if save else [])
        if method != "GET":
            parts += ["-X", method]
        parts.append(f"{self.http.base_url}{path.lstrip('/')}")
        if body is not None:
            parts += ["-H", "content-type: application/json", "-d", json.dumps(body)]
        line = " ".join(shlex.quote(p) if " " in p or "{" in p else p for p in parts)
        # Double quotes: the shell expands $TOKEN (an operator's, from TRACKER_API_TOKENS).
        self.say("  $ " + line + (' -H "authorization: Bearer $TOKEN"' if self.token else ""))

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    async def post(self, path: str, body: Any) -> httpx.Response:
        self._curl("POST", path, body)
        response = await self.http.post(path, json=body, headers=self._headers())
        self.say(f"    {response.status_code} {response.text}")
        return response

    async def get(self, path: str, *, save: bool = False, quiet: bool = False) -> httpx.Response:
        if not quiet:
            self._curl("GET", path, save=save)
        response = await self.http.get(path, headers=self._headers())
        if not quiet and not save:
            self.say(f"    {response.status_code} {response.text}")
        return response

    async def poll(self, report: str, within: float = 60) -> dict[str, Any]:
        """Poll until the report is finished, printing each status it goes through."""
        path = f"/api/v1/reports/{report}"
        self._curl("GET", path)
        self.say("    (polled every 0.2 s; each new status shown)")
        shown = None
        deadline = time.monotonic() + within
        while True:
            response = await self.get(path, quiet=True)
            body: dict[str, Any] = response.json()
            if body["status"] != shown:
                self.say(f"    {response.status_code} {response.text}")
                shown = body["status"]
            if body["status"] in FINAL:
                return body
            if time.monotonic() > deadline:
                raise SystemExit(f"report {report} did not finish in {within:g} s")
            await asyncio.sleep(0.2)


async def http_flow(base_url: str, token: str | None, say: Say) -> None:
    """The report service's HTTP flow against the service at ``base_url``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        client = Client(http, token, say)
        wanted = {"params": {"region": "north", "rows": 1000}, "format": "pdf"}

        say("\nsubmit a PDF report: the id comes back at once")
        report = (await client.post("/api/v1/reports", wanted)).json()["id"]
        say("the same request again: the same id, no second report")
        await client.post("/api/v1/reports", wanted)

        say("poll it")
        await client.poll(report)
        say("download it")
        document = await client.get(f"/api/v1/reports/{report}/download", save=True)
        pages = len(PdfReader(io.BytesIO(document.content)).pages)
        say(
            f"    {document.status_code} {document.headers['content-type']}, "
            f"{len(document.content):,} bytes, {pages} pages: "
            f"{document.headers['content-disposition']}"
        )

        say("\na report whose pricing partner stays down: FAIL with its message")
        failing = {"params": {"region": "west", "rows": 50, "simulate": "partner_down"}}
        broken = (await client.post("/api/v1/reports", failing)).json()["id"]
        await client.poll(broken)
        await client.get(f"/api/v1/reports/{broken}/download")

        say("\na request that is not valid: 400 with the reason, nothing enqueued")
        await client.post("/api/v1/reports", {"params": {"rows": 10}, "format": "xlsx"})

        say("\nthe first request once more, now that it is done: 200, the same id")
        await client.post("/api/v1/reports", wanted)
