"""Kubernetes `Status` errors: every failure the API answers is a metav1.Status JSON.

kubectl prints the `message` (`Error from server (NotFound): pods "x" not found`), clients read
`reason` and `code` (apimachinery pkg/api/errors/errors.go: NewNotFound, NewBadRequest,
NewInvalid, NewMethodNotSupported, NewConflict, NewAlreadyExists, NewGone).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class APIError(Exception):
    """Raised by handlers; answered as a Status with this code and reason."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def body(code: int, reason: str, message: str,
         details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message, "reason": reason,
                           "code": code}
    if details:
        out["details"] = details
    return out


def response(e: APIError) -> web.Response:
    return web.json_response(body(e.code, e.reason, e.message, e.details), status=e.code)


def not_found(plural: str, name: str, group: str = "") -> APIError:
    what = f"{plural}.{group}" if group else plural
    return APIError(404, "NotFound", f'{what} "{name}" not found',
                    {"name": name, "group": group, "kind": plural} if group else
                    {"name": name, "kind": plural})


def no_route() -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource",
                    {})


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def not_allowed(verb: str, plural: str) -> APIError:
    return APIError(405, "MethodNotAllowed",
                    f"the server does not allow this method on the requested resource "
                    f"({verb} {plural})", {"kind": plural})


def gone(message: str) -> APIError:
    return APIError(410, "Expired", message)


def already_exists(plural: str, name: str, group: str = "") -> APIError:
    what = f"{plural}.{group}" if group else plural
    return APIError(409, "AlreadyExists", f'{what} "{name}" already exists',
                    {"name": name, "group": group, "kind": plural})


def invalid(kind: str, name: str, causes: list[dict[str, str]], group: str = "") -> APIError:
    """NewInvalid: `Pod "x" is invalid: spec.f: Invalid value: ...` (one cause) or the causes
    in brackets, each {"reason", "message", "field"} as metav1.StatusCause."""
    what = f"{kind}.{group}" if group else kind
    texts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"]
             for c in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return APIError(422, "Invalid", f'{what} "{name}" is invalid: {joined}',
                    {"name": name, "group": group, "kind": kind, "causes": causes})


def forbidden(plural: str, name: str, why: str) -> APIError:
    return APIError(403, "Forbidden", f'{plural} "{name}" is forbidden: {why}',
                    {"name": name, "kind": plural})


def unsupported_media(content_type: str, accepted: list[str]) -> APIError:
    return APIError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format ({content_type!r}) - "
                    f"accepted media types include: {', '.join(accepted)}", {})


def unavailable(message: str) -> APIError:
    return APIError(503, "ServiceUnavailable", message)


def conflict(plural: str, name: str, group: str = "") -> APIError:
    what = f"{plural}.{group}" if group else plural
    return APIError(409, "Conflict", f'Operation cannot be fulfilled on {what} "{name}": the '
                    "object has been modified; please apply your changes to the latest "
                    "version and try again", {"name": name, "group": group, "kind": plural})
