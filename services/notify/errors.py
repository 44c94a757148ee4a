"""Notify's domain errors as HTTP statuses and codes: the one place they are mapped."""

from __future__ import annotations

from services.notify.domain import AlertNotFound, InvalidCursor, NotDead, NotificationNotFound
from shared.http import ErrorMapping

HTTP_ERRORS: dict[type[Exception], ErrorMapping] = {
    NotificationNotFound: ErrorMapping(404, "not_found"),
    AlertNotFound: ErrorMapping(404, "not_found"),
    NotDead: ErrorMapping(409, "not_dead"),
    InvalidCursor: ErrorMapping(422, "validation_error"),
}
"""Domain error -> (status, code); installed once by `create_app`."""
