"""Shop routes: `POST /v1/shops`, `GET /v1/shops`, `PATCH /v1/shops/{id}` (X-API-Key)."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    UrlConstraints,
)

from services.order.api import ApiKey, UoW, runtime_of, settings_of
from services.order.shops import handlers
from services.order.shops.domain import (
    Credentials,
    DuplicateShop,
    InvalidShop,
    ShopNotFound,
    UnknownShop,
    WritebackNotFailed,
    WritebackNotFound,
)
from shared.egress import EgressPolicy, refuse_internal
from shared.http import ErrorMapping

SHOP_ERRORS: dict[type[Exception], ErrorMapping] = {
    ShopNotFound: ErrorMapping(404, "not_found"),
    DuplicateShop: ErrorMapping(409, "duplicate_shop"),
    InvalidShop: ErrorMapping(422, "validation_error"),
    UnknownShop: ErrorMapping(401, "unauthorized"),
    WritebackNotFound: ErrorMapping(404, "not_found"),
    WritebackNotFailed: ErrorMapping(409, "writeback_not_failed"),
}

router = APIRouter(prefix="/v1/shops", tags=["shops"])
ALLOW = "DROPSHIP_SHOP_ALLOWED_HOSTS"


def shop_egress(request: Request) -> EgressPolicy:
    """The egress guard for shop URLs (on in production)."""
    return settings_of(runtime_of(request)).egress_policy()


def _printable(value: str) -> str:
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


Domain = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_printable)]
ApiUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=500)]


class ShopIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["shopify", "woocommerce"]
    domain: Domain
    """Shopify: `name.myshopify.com`; WooCommerce: the site URL it sends as X-WC-Webhook-Source."""
    webhook_secret: SecretStr = Field(min_length=1, max_length=255)
    api_base_url: ApiUrl
    access_token: SecretStr | None = Field(None, min_length=1, max_length=255)
    consumer_key: SecretStr | None = Field(None, min_length=1, max_length=255)
    consumer_secret: SecretStr | None = Field(None, min_length=1, max_length=255)
    notify_customer: bool = True
    """Shopify: e-mail the customer on fulfilment; WooCommerce: the note is a customer note."""


class ShopPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_base_url: ApiUrl | None = None
    webhook_secret: SecretStr | None = Field(None, min_length=1, max_length=255)
    access_token: SecretStr | None = Field(None, min_length=1, max_length=255)
    consumer_key: SecretStr | None = Field(None, min_length=1, max_length=255)
    consumer_secret: SecretStr | None = Field(None, min_length=1, max_length=255)
    notify_customer: bool | None = None
    active: bool | None = None


def _reveal(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _render(shop: Any) -> dict[str, Any]:
    out: dict[str, Any] = shop.public()
    if out["created_at"] is not None:
        out["created_at"] = out["created_at"].isoformat().replace("+00:00", "Z")
    return out


@router.post("", status_code=201, summary="Register a Shopify shop or WooCommerce site")
async def register(request: Request, body: ShopIn, uow: UoW, _: ApiKey) -> dict[str, Any]:
    await refuse_internal(shop_egress(request), body.api_base_url, "body.api_base_url", ALLOW)
    cmd = handlers.RegisterShop(
        platform=body.platform,
        domain=body.domain,
        api_base_url=str(body.api_base_url).rstrip("/"),
        credentials=Credentials(
            webhook_secret=body.webhook_secret.get_secret_value(),
            access_token=_reveal(body.access_token),
            consumer_key=_reveal(body.consumer_key),
            consumer_secret=_reveal(body.consumer_secret),
        ),
        notify_customer=body.notify_customer,
    )
    return _render(await handlers.register_shop(cmd, uow))


@router.get("", summary="Registered shops (never their secrets)")
async def list_shops(uow: UoW, _: ApiKey) -> dict[str, Any]:
    return {"items": [_render(s) for s in await handlers.list_shops(uow)], "next_cursor": None}


@router.patch("/{shop_id}", summary="Edit a shop, rotate its secrets, or disable it")
async def edit(
    request: Request, shop_id: str, body: ShopPatch, uow: UoW, _: ApiKey
) -> dict[str, Any]:
    await refuse_internal(shop_egress(request), body.api_base_url, "body.api_base_url", ALLOW)
    changes: dict[str, Any] = {}
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif name == "api_base_url":
            value = str(value).rstrip("/")
        changes[name] = value
    return _render(await handlers.update_shop(shop_id, changes, uow))
