"""Who acts: every operator action names an ``Actor``, which the audit log records."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Final, Literal

from tracker.validation import check_id

Role = Literal["viewer", "operator"]
Via = Literal["cli", "api", "ui", "local", "service"]
ROLES: Final = frozenset({"viewer", "operator"})
VIAS: Final = frozenset({"cli", "api", "ui", "local", "service"})
MAX_NAME_CHARS: Final = 128


@dataclass(frozen=True)
class Actor:
    """A person or process: ``name`` as the audit log shows it, ``role`` (a viewer may read,
    an operator may act), ``via`` the way in (``cli``, ``api``, ``ui``, ``local``: the
    console without tokens on a loopback bind; ``service``: the tracker itself)."""

    name: str
    role: Role
    via: str

    def __post_init__(self) -> None:
        check_id(self.name, "actor name")
        if len(self.name) > MAX_NAME_CHARS:
            raise ValueError(f"an actor name is at most {MAX_NAME_CHARS} characters")
        if self.role not in ROLES:
            raise ValueError(f"role must be 'viewer' or 'operator', not {self.role!r}")
        if self.via not in VIAS:
            raise ValueError(f"via must be one of {sorted(VIAS)}, not {self.via!r}")

    def require_operator(self) -> None:
        """Refuse an action to a viewer."""
        if self.role != "operator":
            raise PermissionError(f"{self.name} is a viewer: acting needs the operator role")


# What the tracker does by itself (resolving a group none of whose dead letters is left).
SERVICE: Final = Actor("tracker", "operator", "service")


def cli_actor(name: str | None = None) -> Actor:
    """The operator at the command line: ``name``, else ``$TRACKER_ACTOR``, else the OS
    user."""
    chosen = name or os.environ.get("TRACKER_ACTOR") or _os_user()
    return Actor(chosen[:MAX_NAME_CHARS], "operator", "cli")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment nor the password database
        return "operator"
