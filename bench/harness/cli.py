"""`python -m bench <scenario> [options]`: one parser per scenario, the options they share."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness.dbs import BACKENDS, pg_server


@dataclass(frozen=True)
class Scenario:
    """A benchmark: its name, what it measures (the module docstring), options and run."""

    name: str
    doc: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0]


def backends(text: str) -> list[str]:
    """`sqlite,postgresql` -> ["sqlite", "postgresql"] (argparse type)."""
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown backend {unknown[0]!r} (sqlite, postgresql)")
    return names


def floats(text: str) -> list[float]:
    """`300,700` -> [300.0, 700.0]; "" -> [] (argparse type)."""
    try:
        return [float(r) for r in text.split(",") if r.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from exc


def words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def add_backends(ap: argparse.ArgumentParser, *, both_under_testenv: bool = True) -> None:
    """`--backends`: by default sqlite, plus postgresql under deploy.testenv (or only it)."""
    if pg_server():
        default = "sqlite,postgresql" if both_under_testenv else "postgresql"
    else:
        default = "sqlite"
    ap.add_argument(
        "--backends",
        type=backends,
        default=backends(default),
        help=f"comma-separated: sqlite,postgresql (default here: {default})",
    )


def add_common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", action="store_true", help="also print one JSON line of results")
    ap.add_argument(
        "--results", type=Path, default=None, metavar="FILE", help="also write the report here"
    )
    ap.add_argument("--broker-log", type=Path, default=None, help="append tansu output here")


def parser(scenarios: Mapping[str, Scenario]) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the dropship platform. They print figures and assert nothing.",
    )
    sub = ap.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for s in scenarios.values():
        p = sub.add_parser(
            s.name,
            help=s.summary,
            description=s.doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        s.options(p)
        add_common(p)
    return ap


def main(scenarios: Mapping[str, Scenario], argv: Sequence[str] | None = None) -> int:
    args = parser(scenarios).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(scenarios[args.scenario].run(args))


def add_rates(
    ap: argparse.ArgumentParser,
    *,
    rates: str,
    unit: str,
    duration: float,
    warmup: float,
    warmup_rate: float,
    timeout: float,
    timeout_help: str,
) -> None:
    """The open-model options: arrival rates, seconds per rate, warm-up, timeout."""
    ap.add_argument(
        "--rates",
        type=floats,
        default=floats(rates),
        help=f"open-model arrival rates, {unit}/s, run in this order (default {rates})",
    )
    ap.add_argument(
        "--duration", type=float, default=duration, help=f"seconds per rate (default {duration:g})"
    )
    ap.add_argument("--timeout", type=float, default=timeout, help=timeout_help)
    ap.add_argument("--warmup", type=float, default=warmup, help="seconds of unreported warm-up")
    ap.add_argument("--warmup-rate", type=float, default=warmup_rate, help=f"warm-up {unit}/s")


def add_profile(ap: argparse.ArgumentParser, *, seconds: int, what: str) -> None:
    """`--profile DIR` (py-spy; stacks go to DIR) and `--profile-seconds`."""
    ap.add_argument(
        "--profile", type=Path, default=None, metavar="DIR", help=f"{what}; stacks go to DIR"
    )
    ap.add_argument(
        "--profile-seconds", type=int, default=seconds, help=f"py-spy duration (default {seconds})"
    )


def add_logs(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--logs", type=Path, default=None, metavar="DIR", help="keep the services' logs in DIR"
    )


def prepare_dirs(args: argparse.Namespace) -> None:
    """Create `--logs` and `--profile` folders; refuse `--profile` without py-spy."""
    from bench.harness.profile import py_spy

    for name in ("logs", "profile"):
        folder = getattr(args, name, None)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    if getattr(args, "profile", None) is not None and py_spy() is None:
        raise SystemExit("--profile needs py-spy (.venv/bin/pip install py-spy)")
