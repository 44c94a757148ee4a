"""Notice e-mail: CPU to build one and turn it into the bytes that go to SMTP.

    .venv/bin/python -m bench mail --count 2000

Renders each template notify sends (every kind, `en` and `zh-CN`) once, then builds and
serialises each as notify does (`services.notify.mime.build_email`, with and without
8-bit parts) and, for comparison, as the standard library's `EmailMessage` does (what
notify used before: headers parsed and refolded through its policy, then flattened as
`aiosmtplib` flattens it for an SMTP server with `8BITMIME`). Prints µs per e-mail, best
of `--repeat` rounds of `--count` e-mails each, and the mean size.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from aiosmtplib.email import flatten_message

from bench.harness.cli import Scenario
from bench.harness.report import Output
from services.notify.domain import Kind
from services.notify.mime import build_email
from services.notify.rendering import SAMPLES, Rendered, Renderer, sample_context

TO_NAMES = {"en": "Ann O'Neil", "zh-CN": "张三"}


def stdlib_email(rendered: Rendered, to_email: str, to_name: str) -> bytes:
    """The message as `EmailMessage` built it (notify before `services.notify.mime`)."""
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = "Dropship Demo Store <orders@dropship.example>"
    local, _, host = to_email.rpartition("@")
    message["To"] = Address(display_name=to_name, username=local, domain=host)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = "<n-1@dropship.example>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text, charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    message["Content-Language"] = rendered.locale
    return flatten_message(message, cte_type="8bit")


def lean_email(rendered: Rendered, to_email: str, to_name: str, *, eight_bit: bool) -> bytes:
    return build_email(
        rendered,
        to_email=to_email,
        to_name=to_name,
        mail_from="Dropship Demo Store <orders@dropship.example>",
        message_id="n-1",
        domain="dropship.example",
    ).as_bytes(eight_bit=eight_bit)


def samples() -> list[Rendered]:
    renderer = Renderer()
    return [
        renderer.render(kind, locale, sample_context(kind, locale))
        for kind in Kind
        if kind in SAMPLES
        for locale in ("en", "zh-CN")
    ]


def timed(
    build: Callable[[Rendered, str, str], bytes], mails: list[Rendered], count: int
) -> tuple[float, float]:
    """(µs per e-mail, mean bytes) over `count` e-mails cycling through `mails`."""
    size = 0
    started = time.perf_counter()
    for i in range(count):
        rendered = mails[i % len(mails)]
        size += len(build(rendered, "ann@example.com", TO_NAMES[rendered.locale]))
    return (time.perf_counter() - started) / count * 1e6, size / count


async def run(args: argparse.Namespace) -> int:
    out = Output(args.results)
    mails = samples()
    ways: dict[str, Callable[[Rendered, str, str], bytes]] = {
        "EmailMessage + flatten (before)": stdlib_email,
        "mime.build_email, 8bit parts": lambda r, e, n: lean_email(r, e, n, eight_bit=True),
        "mime.build_email, 7-bit server": lambda r, e, n: lean_email(r, e, n, eight_bit=False),
    }
    out(f"notice e-mail build + serialise: {len(mails)} templates, {args.count} e-mails a round")
    results = []
    for name, build in ways.items():
        us, size = min(timed(build, mails, args.count) for _ in range(args.repeat))
        results.append({"way": name, "us_per_mail": us, "bytes": size})
    out.table(
        f"{'way':<34} {'µs/mail':>9} {'bytes':>10}",
        (f"{r['way']:<34} {r['us_per_mail']:9.1f} {r['bytes']:10.0f}" for r in results),
    )
    if args.json:
        out.json({}, results)
    out.save()
    return 0


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--count", type=int, default=2000, help="e-mails per round")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best is shown")


SCENARIO = Scenario("mail", __doc__ or "", options, run)
