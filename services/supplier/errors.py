"""How the supplier service's domain errors read over HTTP: one table, installed once."""

from __future__ import annotations

from services.supplier.domain import (
    IllegalTransition,
    InvalidCsv,
    InvalidOffers,
    LineBusy,
    NoOfferForLine,
    NotRoutable,
    OfferNotFound,
    OrderNotFound,
    SupplierError,
    SupplierKeyTaken,
    SupplierNotFound,
)
from shared.http import ErrorMapping

DOMAIN_ERRORS: dict[type[Exception], ErrorMapping] = {
    SupplierError: ErrorMapping(400, "bad_request"),
    SupplierNotFound: ErrorMapping(404, "not_found"),
    OfferNotFound: ErrorMapping(404, "not_found"),
    SupplierKeyTaken: ErrorMapping(409, "conflict"),
    IllegalTransition: ErrorMapping(409, "conflict"),
    InvalidOffers: ErrorMapping(422, "validation_error"),
    InvalidCsv: ErrorMapping(422, "validation_error"),
    OrderNotFound: ErrorMapping(404, "not_found"),
    LineBusy: ErrorMapping(409, "line_busy"),
    NoOfferForLine: ErrorMapping(422, "validation_error"),
    NotRoutable: ErrorMapping(409, "not_routable"),
}
