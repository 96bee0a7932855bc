"""Talking to a service's HTTP API for the command line: a bearer token, bounded waits, and
every answer that is not a success turned into the error the commands already know (no
such thing, a conflict, a refused value: exit 1 with the service's sentence) or one line
saying what to do (the service out of reach, the token refused)."""

from __future__ import annotations

from typing import Any, Final

import click
import httpx

from tracker.cli.app import ServiceTarget
from tracker.errors import ConflictError, NotFoundError
from tracker.validation import printable

CONNECT_TIMEOUT: Final = 5.0
# The slowest answers are bulk actions (an archive of thousands, an import of a .dlq).
READ_TIMEOUT: Final = 120.0
API: Final = "/api/v1"


class ServiceError(click.ClickException):
    """The service could not be used: one line, exit 1."""


class Http:
    """``async with Http(target) as http: await http.get("/queues")`` (paths under
    ``/api/v1``); the JSON body of each answer, or an error (see the module)."""

    def __init__(self, target: ServiceTarget) -> None:
        self.target = target
        self.read_timeout = target.read_timeout or READ_TIMEOUT
        headers = {"accept": "application/json"}
        if target.token:
            headers["authorization"] = f"Bearer {target.token}"
        self.client = httpx.AsyncClient(
            base_url=target.url,
            transport=target.transport() if target.transport is not None else None,
            headers=headers,
            timeout=httpx.Timeout(self.read_timeout, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
        )

    async def __aenter__(self) -> Http:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self._send("GET", path, params=_present(params or {}))

    async def post(self, path: str, body: Any = None) -> Any:
        return await self._send("POST", path, json=body)

    async def _send(self, method: str, path: str, **options: Any) -> Any:
        url = self.target.url
        try:
            response = await self.client.request(method, API + path, **options)
        except httpx.TimeoutException as error:
            phase = "connect" if isinstance(error, httpx.ConnectTimeout) else "answer"
            bound = CONNECT_TIMEOUT if phase == "connect" else self.read_timeout
            raise ServiceError(
                f"the service at {url} did not {phase} within {bound:g} s: is `tracker serve` "
                "running there, and reachable? (--service / TRACKER_SERVICE_URL)"
            ) from error
        except httpx.HTTPError as error:
            reason = printable(str(error) or type(error).__name__, 200)
            raise ServiceError(
                f"cannot reach the service at {url} ({reason}): is `tracker serve` running "
                "there? (--service / TRACKER_SERVICE_URL)"
            ) from error
        return _answer(response, url, path)


def _present(params: dict[str, Any]) -> dict[str, Any]:
    """The query parameters that have a value (None and empty lists left out)."""
    return {key: value for key, value in params.items() if value not in (None, [], ())}


def _answer(response: httpx.Response, url: str, path: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and body is not None:
        return body
    message = _message(body)
    status = response.status_code
    if message is None:
        raise ServiceError(
            f"{url} answered {status} without the tracker's JSON to {API}{path}: is it a "
            "tracker service, of this version? (--service / TRACKER_SERVICE_URL)"
        )
    if status == 401:
        raise ServiceError(
            f"the service refused the request: {message} (set TRACKER_SERVICE_TOKEN to a "
            "token of the service's TRACKER_API_TOKENS)"
        )
    if status == 403:
        raise PermissionError(message)
    if status == 404:
        raise NotFoundError(message)
    if status == 409:
        raise ConflictError(message)
    if status in (400, 413, 422):
        raise ValueError(message)
    if status >= 500:
        message += " (the service's log tells more)"
    raise ServiceError(f"the service answered {status}: {message}")


def _message(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return printable(body["error"], 500)
    return None
