"""Errors the device side answers with; each knows its HTTP status (and serial error code)."""

from __future__ import annotations


class RuntimeFailure(Exception):
    status = 500
    code = 1


class BadRequest(RuntimeFailure, ValueError):
    """Wrong dtype, shape, batch size, malformed body."""

    status = 400
    code = 2


class UnknownTask(RuntimeFailure, KeyError):
    status = 404
    code = 3

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown task"


class ServiceUnavailable(RuntimeFailure):
    """No bundle is active, or a backend cannot run here."""

    status = 503
    code = 4


class VersionConflict(RuntimeFailure):
    """A bundle that is not newer than the active one (anti-rollback): only the rollback call goes back."""

    status = 409
    code = 5


class Unauthorized(RuntimeFailure):
    """An admin call without the right bearer token."""

    status = 401
    code = 6


class Forbidden(RuntimeFailure):
    """An admin call the device's configuration does not allow (no token configured, unsigned bundles, no store)."""

    status = 403
    code = 7
