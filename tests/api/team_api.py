"""Helpers for the team review tests: readers in browsers of their own, and the team calls of docs/api.md."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from app.config import Settings
from tests.api.conftest import Api
from tests.api.lesion_api import body, open_api


@contextmanager
def browsers(settings: Settings, database_url: str, **people: str) -> Iterator[dict[str, Api]]:
    """One signed-in browser per name=role."""
    with ExitStack() as stack:
        out = {}
        for name, role in people.items():
            out[name] = stack.enter_context(open_api(settings, database_url)).login(name, role)
        yield out


def assign(
    admin: Api, readers: list[str], mode: str = "double", status: int = 201, **flt: Any
) -> dict[str, Any]:
    """POST an assignment."""
    r = admin.write(
        "POST", "/api/team/assignments", json={"name": "t", "mode": mode, "readers": readers, "filter": flt}
    )
    return body(r, status)


def next_read(api: Api, assignment_id: int) -> dict[str, Any] | None:
    """Take (or resume) the next read."""
    read: dict[str, Any] | None = body(api.write("POST", f"/api/team/assignments/{assignment_id}/next"))[
        "read"
    ]
    return read


def save(api: Api, read: dict[str, Any], marks: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """PUT the read's marks."""
    r = api.write("PUT", f"/api/team/reads/{read['id']}", json={"version": read["version"], "marks": marks})
    return body(r, status)


def finish(api: Api, read: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """Finish the read."""
    return body(
        api.write("POST", f"/api/team/reads/{read['id']}/finish", json={"version": read["version"]}), status
    )


def marks_with(read: dict[str, Any], **by_id: dict[str, Any]) -> dict[str, Any]:
    """The read's marks with some lesions changed (keys 'l<ID>') and nothing added."""
    lesions = [{**m, **by_id.get(f"l{m['id']}", {})} for m in read["marks"]["lesions"]]
    return {"lesions": lesions, "added": list(read["marks"]["added"])}
