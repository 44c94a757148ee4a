"""Property-based fuzzing of the order service's HTTP API against its own OpenAPI document.

schemathesis (its CLI, in a subprocess) generates valid and invalid requests for every
operation in `/openapi.json` of a real uvicorn process and fails on any 5xx
(`not_a_server_error`) or any response body that contradicts the documented schema
(`response_schema_conformance`).

`status_code_conformance` is deliberately not used: the FastAPI document lists only the
success status and 422 (plus 409 on `POST /v1/orders`), so it flags correct answers such as
404 for an unknown order, 401 for an unsigned webhook or 400 for a body that is not UTF-8.
`documented_or_contract_status` below stands in for it: a status must be documented for the
operation or be one of the statuses the error contract of `shared.http` defines.

This file is also the schemathesis hooks file (`SCHEMATHESIS_HOOKS`): loaded from a path,
it runs as the module `_schemathesis_hooks`, and only then registers its hooks, which
1. repair the rules of `OrderIn` the OpenAPI document cannot express (ISO-4217/3166 codes,
   a decimal `unit_price` with the currency's precision, a strict-integer `quantity`, an
   e-mail `email-validator` accepts, no control characters, unique SKUs) in *positive*
   cases only, so generated orders are really placed (201) and the
   stateful phase can follow their ids into read, timeline, contact and cancel;
2. give webhook deliveries that carry a signature header a correctly signed `{}` body, so
   the generated topic and delivery-id headers reach the code behind the HMAC check.

Reproducible: one worker, a fixed seed, no hypothesis example database and no schemathesis
crash cache; everything schemathesis writes (reports, caches) stays under tmp_path. To dig
deeper locally: `DROPSHIP_FUZZ_MAX_EXAMPLES=500 pytest tests/integration/test_order_api_fuzz.py`.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import unicodedata
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pycountry
from email_validator import EmailNotValidError, validate_email

from services.order.marketplaces import sign
from services.order.pii import generate_key
from shared.money import minor_units
from tests.support.services import ROOT, service_process

HOOKS_MODULE = "_schemathesis_hooks"  # the name schemathesis runs a hooks *file* under
SEED = 20261123
# per operation and phase: ~30 s per backend on an idle 2-core machine
MAX_EXAMPLES = int(os.environ.get("DROPSHIP_FUZZ_MAX_EXAMPLES", "100"))
SECRETS = {
    "/v1/webhooks/shopify": ("x-shopify-hmac-sha256", "fuzz-shopify-secret"),
    "/v1/webhooks/woocommerce": ("x-wc-webhook-signature", "fuzz-woocommerce-secret"),
}
WEBHOOK_BODY = b"{}"
CHECKS = "not_a_server_error,response_schema_conformance,documented_or_contract_status"
# Statuses `shared.http` answers on every route without FastAPI documenting them.
CONTRACT_STATUSES = {400, 401, 404, 405, 409, 422}

_CURRENCIES = ("USD", "EUR", "JPY", "KWD", "CNY", "GBP", "CLF")  # 2, 0, 3 and 4 decimals
_COUNTRIES = ("US", "DE", "CN", "JP", "GB", "BR", "IN", "KW")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-.]{4,30}$")
_TEXT = {
    "customer": ("name",),
    "shipping_address": ("line1", "line2", "city", "region", "postal_code"),
}


# --- hooks (run inside the schemathesis process only) ---------------------------------


def _pick(options: tuple[str, ...], seed: str) -> str:
    """A deterministic choice, so a case hypothesis replays is repaired the same way."""
    return options[sum(map(ord, seed)) % len(options)]


def _clean_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    value = "".join("x" if unicodedata.category(ch) == "Cc" else ch for ch in value)
    if value and not value.strip():  # the API trims first, then requires one character
        value = "x" + value[1:]
    return value


def _price(value: Any, places: int) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return value
    if isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            return str(len(value))
        if not amount.is_finite() or not 0 <= amount <= 1_000_000:
            return str(len(value))
        return format(amount.quantize(Decimal(1).scaleb(-places), rounding="ROUND_DOWN"), "f")
    return round(value, places) if isinstance(value, float) else value


def repair_order(body: Any, *, distinct_external_id: bool = False) -> Any:
    """Make a schema-valid `OrderIn` body also pass the rules only the server knows.

    With `distinct_external_id`, different bodies get different external ids (hypothesis
    favours `"0"`, so nearly every order after the first would be a duplicate, 409).
    """
    if not isinstance(body, dict):
        return body
    body = json.loads(json.dumps(body))
    external_id = body.get("external_id")
    if distinct_external_id and isinstance(external_id, str):
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        body["external_id"] = f"{external_id[:100]}-{digest}"
    currency = body.get("currency")
    if isinstance(currency, str) and not _is_currency(currency):
        body["currency"] = currency = _pick(_CURRENCIES, currency)
    places = minor_units(currency) if isinstance(currency, str) else 0
    if isinstance(body.get("external_id"), str):
        body["external_id"] = _clean_text(body["external_id"])
    for part, fields in _TEXT.items():
        section = body.get(part)
        if isinstance(section, dict):
            for name in fields:
                if name in section:
                    section[name] = _clean_text(section[name])
    address = body.get("shipping_address")
    if isinstance(address, dict):
        country = address.get("country")
        if isinstance(country, str) and not _is_country(country):
            address["country"] = _pick(_COUNTRIES, country)
    customer = body.get("customer")
    if isinstance(customer, dict):
        phone, email = customer.get("phone"), customer.get("email")
        if isinstance(phone, str) and not _PHONE.match(phone.strip()):  # trimmed, then matched
            customer["phone"] = "+1 555 0100"
        if isinstance(email, str) and not _is_email(email):  # e.g. a special-use domain
            customer["email"] = f"buyer{len(email)}@example.com"
    lines = body.get("lines")
    if isinstance(lines, list):
        seen: set[str] = set()
        for line in lines:
            if not isinstance(line, dict):
                continue
            quantity = line.get("quantity")
            if isinstance(quantity, float) and quantity.is_integer():
                line["quantity"] = int(quantity)  # JSON Schema's integer; the API's is strict
            if "unit_price" in line:
                line["unit_price"] = _price(line["unit_price"], places)
            sku = line.get("sku")
            if isinstance(sku, str):
                candidate, n = sku, 0
                while candidate in seen:
                    n += 1
                    candidate = f"{sku[:56]}-{n}"
                line["sku"] = candidate
                seen.add(candidate)
    return body


def _is_currency(code: str) -> bool:
    return pycountry.currencies.get(alpha_3=code) is not None


def _is_country(code: str) -> bool:
    return pycountry.countries.get(alpha_2=code) is not None


def _is_email(address: str) -> bool:
    try:
        validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _register_hooks() -> None:
    import schemathesis
    from schemathesis.core import NOT_SET

    # Scoped with `apply_to`: an unscoped `map_case` slows generation for every operation ~7x.
    @schemathesis.hook("map_case").apply_to(method="POST", path="/v1/orders")
    def place_valid_orders(context: Any, case: Any) -> Any:
        meta = case.meta
        if meta is not None and meta.generation.mode.is_positive:
            # the coverage phase keeps hypothesis' repeated external ids: its 409s test them
            fuzzing = meta.phase.name in ("fuzzing", "stateful")
            case.body = repair_order(case.body, distinct_external_id=fuzzing)
        return case

    @schemathesis.hook
    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        """Deliver a signed JSON object to a webhook when the case sends a signature header.

        The webhooks document headers only (they read the raw body), so schemathesis sends
        no body; a signed `{}` gets past the HMAC and `load_json` to topic dispatch and the
        delivery-id bookkeeping, the code the generated headers can break.
        """
        target = SECRETS.get(case.operation.path)
        if target is None or case.method.upper() != "POST" or case.body is not NOT_SET:
            return
        header, secret = target
        if case.headers and isinstance(case.headers.get(header), str):
            kwargs["data"] = WEBHOOK_BODY
            case.headers[header] = sign(WEBHOOK_BODY, secret)
            case.headers["Content-Type"] = "application/json"

    @schemathesis.check
    def documented_or_contract_status(ctx: Any, response: Any, case: Any) -> bool | None:
        """The status is documented for the operation or is part of the error contract."""
        documented = {str(s) for s in case.operation.responses.status_codes}
        status = response.status_code
        if status >= 500 or str(status) in documented or "default" in documented:
            return None  # a 5xx is `not_a_server_error`'s to report
        if status in CONTRACT_STATUSES:
            body = _json(response)
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and {"code", "message"} <= set(error):
                return None
            raise AssertionError(f"{status} without the error envelope: {response.text[:300]}")
        raise AssertionError(f"undocumented status {status} (documented: {sorted(documented)})")


def _json(response: Any) -> Any:
    try:
        return json.loads(response.content or b"null")
    except ValueError:
        return None


if __name__ == HOOKS_MODULE:
    _register_hooks()


# --- the test ------------------------------------------------------------------------


_TEMPLATE = re.compile(r"^/v1/orders/[^/]+")


def _operation(method: str, url: str) -> str:
    path = "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
    if path.startswith("/v1/orders/"):
        path = _TEMPLATE.sub("/v1/orders/{order_id}", path)
    return f"{method} {path}"


def _statuses(har_path: Path) -> dict[str, collections.Counter[int]]:
    """Responses per operation, from the HAR file of every request schemathesis sent."""
    har = json.loads(har_path.read_text())
    seen: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for entry in har["log"]["entries"]:
        request = entry["request"]
        seen[_operation(request["method"], request["url"])][entry["response"]["status"]] += 1
    return seen


_RECORD = re.compile(r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|INFO:|ERROR:|WARNING:)", re.M)
_RAISED = re.compile(r"^[A-Za-z_][\w.]*: ")  # `module.SomeError: message`


def _tracebacks(log: Path, limit: int = 3) -> str:
    """The service's `unhandled error` records, one per distinct exception, else its tail."""
    text = log.read_text(errors="replace") if log.exists() else ""
    starts = [m.start() for m in _RECORD.finditer(text)] + [len(text)]
    records = [text[a:b] for a, b in itertools.pairwise(starts)]
    distinct: dict[str, str] = {}
    for record in records:
        if "unhandled error" in record and "Traceback" in record:
            raised = [line for line in record.splitlines() if _RAISED.match(line)]
            distinct.setdefault(raised[-1] if raised else record, record)
    if not distinct:
        return "\n".join(text.splitlines()[-40:])
    shown = list(distinct.values())[:limit]
    more = len(distinct) - len(shown)
    return "".join(shown) + (f"... and {more} more distinct errors\n" if more > 0 else "")


def _run_schemathesis(url: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`schemathesis run` in its own process, leaving every file it writes under tmp_path."""
    work = tmp_path / "schemathesis"
    reports = work / "reports"
    work.mkdir()
    config = work / "schemathesis.toml"
    # its crash cache would replay the last run's failures first: neither reproducible nor
    # wanted in the repo (it defaults to ./.schemathesis)
    config.write_text("[cache]\nenabled = false\n")
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--header",
        "X-API-Key: dev-api-key",
        "--header",
        "Authorization: Bearer dev-service-token",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",  # no hypothesis example database at all
        "--workers",
        "1",  # one worker: the same seed gives the same requests in the same order
        "--request-timeout",
        "15",
        "--report",
        "junit,json,har",
        "--report-dir",
        str(reports),
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(Path(__file__).resolve()),  # a path: runs as HOOKS_MODULE
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HYPOTHESIS_STORAGE_DIRECTORY": str(work / ".hypothesis"),
    }
    env.pop("HYPOTHESIS_PROFILE", None)
    proc = subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    return proc, reports


def _fuzz_order_service(env: dict[str, str], tmp_path: Path) -> None:
    order = service_process("order", env, tmp_path)
    try:
        order.start()
        proc, reports = _run_schemathesis(order.url, tmp_path)
    finally:
        order.stop()

    context = (
        f"schemathesis exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-20_000:]}\n"
        f"--- {order.log_path} ---\n{_tracebacks(order.log_path)}"
    )
    assert proc.returncode == 0, context
    (json_report,) = reports.glob("json-*.json")
    report = json.loads(json_report.read_text())
    assert report["complete"] and not report["failures"] and not report["errors"], context
    assert report["operations"]["tested"] == report["operations"]["selected"] >= 11, context

    # the run really reached the service's logic, not only its validation
    (har,) = reports.glob("har-*.json")
    statuses = _statuses(har)
    summary = "\n".join(f"{op}: {dict(c)}" for op, c in sorted(statuses.items()))
    assert not any(s >= 500 for c in statuses.values() for s in c), f"5xx:\n{summary}"
    assert statuses["POST /v1/orders"][201] >= 5, f"too few orders placed:\n{summary}"
    for operation in (
        "GET /v1/orders",
        "GET /v1/orders/{order_id}",
        "GET /v1/orders/{order_id}/timeline",
        "GET /v1/orders/{order_id}/contact",
        "POST /v1/orders/{order_id}/cancel",
        "POST /v1/customers/redact",
        "POST /v1/webhooks/shopify",
        "POST /v1/webhooks/woocommerce",
    ):
        assert statuses[operation][200] >= 1, f"{operation} never succeeded:\n{summary}"


async def test_order_api_survives_schemathesis(database_url, broker, tmp_path):
    env = {
        "DROPSHIP_ENVIRONMENT": "test",
        "DROPSHIP_ORDER_DATABASE_URL": await database_url("order"),
        "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
        "DROPSHIP_DATA_DIR": str(tmp_path),
        "DROPSHIP_PII_KEY": generate_key(),
        "DROPSHIP_SHOPIFY_SECRET": SECRETS["/v1/webhooks/shopify"][1],
        "DROPSHIP_WOOCOMMERCE_SECRET": SECRETS["/v1/webhooks/woocommerce"][1],
        "DROPSHIP_LOG_JSON": "false",
    }
    await asyncio.to_thread(_fuzz_order_service, env, tmp_path)
