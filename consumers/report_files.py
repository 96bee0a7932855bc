"""Where report documents live: one directory (``TRACKER_REPORTS_DIR``), a folder per report,
a file per execution, and nothing served or removed outside it.

Every path is built from the report's ids, never from a request or a stored path, and ids
that are not plain names are hashed first; a file is served only when its real path (links
followed) is the one built, inside the directory. A file belongs to one execution, so the
release of an older execution of a report never removes a newer one's document.

The directory is read from the environment by this module, at its edge (``from_env``, once,
when ``consumers.reports`` is loaded), not by ``tracker.settings``: it is the report
consumer's setting, and the tracker knows nothing of reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from consumers.report_request import FORMATS
from tracker.models import TaskTracker

ENV: Final = "TRACKER_REPORTS_DIR"
# The name before TRACKER_REPORTS_DIR, read with a DeprecationWarning until the next minor.
OLD_ENV: Final = "REPORTS_OUTPUT_DIR"
DEFAULT_DIR: Final = "reports-output"
_PLAIN: Final = re.compile(r"[A-Za-z0-9_-]{1,80}")


def plain_name(value: str) -> str:
    """``value`` as one safe path component: itself when plain (letters, digits, ``_``,
    ``-``; ``:`` read as ``_``), else a hash of it."""
    name = value.replace(":", "_")
    if _PLAIN.fullmatch(name):
        return name
    return "h" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class ReportFiles:
    """The report documents under ``root``."""

    root: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReportFiles:
        """``TRACKER_REPORTS_DIR`` (formerly ``REPORTS_OUTPUT_DIR``), else ``reports-output``
        in the current directory."""
        env = os.environ if environ is None else environ
        value = env.get(ENV)
        if not value and (value := env.get(OLD_ENV)):
            warnings.warn(
                f"{OLD_ENV} is renamed {ENV}; the old name is read until the next minor version",
                DeprecationWarning,
                stacklevel=2,
            )
        return cls(Path(value or DEFAULT_DIR))

    def folder(self, task_id: str) -> Path:
        return self.root / plain_name(task_id)

    def parts(self, task_id: str, execution_id: str) -> Path:
        """Where an execution writes its pages before they are merged."""
        return self.folder(task_id) / f"parts-{plain_name(execution_id)}"

    def document(self, task_id: str, execution_id: str, fmt: str) -> Path:
        """The merged document of one execution."""
        if fmt not in FORMATS:
            raise ValueError(f"no report format {fmt!r}")
        return self.folder(task_id) / f"{plain_name(execution_id)}.{fmt}"

    def servable(self, task_id: str, execution_id: str, fmt: str) -> Path | None:
        """The execution's document to send, or None when it is gone or is not a regular
        file at exactly its own path under the directory (a link anywhere on the way, to
        outside the directory or not, makes it None)."""
        path = self.document(task_id, execution_id, fmt)
        try:
            real = path.resolve(strict=True)
            root = self.root.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a loop of links
            return None
        if real != root / path.relative_to(self.root) or not real.is_file():
            return None
        return real

    async def release(self, execution: TaskTracker) -> None:
        """Remove what ``execution`` wrote (its document, parts left by an attempt that
        died), and its report's folder once empty: the sweeper's ``release`` hook, run
        before the execution's record expires. Idempotent."""
        await asyncio.to_thread(self._remove, execution.task_id, execution.execution_id)

    def _remove(self, task_id: str, execution_id: str) -> None:
        for fmt in FORMATS:
            self.document(task_id, execution_id, fmt).unlink(missing_ok=True)
        shutil.rmtree(self.parts(task_id, execution_id), ignore_errors=True)
        # Refused while another execution's document is there, or once the folder is gone.
        with contextlib.suppress(OSError):
            self.folder(task_id).rmdir()
