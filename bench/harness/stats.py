"""Latency statistics: the one nearest-rank percentile, summaries and number formatting."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q=100 is the maximum); None for no values.

    Failures are best passed as `math.inf`: they count as slower than any answer, so a
    p99 that lands on them reads as "over the timeout" rather than disappearing.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, int(-(-len(ordered) * q // 100)))
    return ordered[min(len(ordered), rank) - 1]


def summary(
    values: Sequence[float], quantiles: Iterable[str] = ("p50", "p90", "p99", "max")
) -> dict[str, float | None]:
    """The named quantiles of `values`: {"p50": ..., "p99": ...}."""
    wanted = set(quantiles)
    return {name: percentile(values, q) for name, q in QUANTILES if name in wanted}


def p50_p99(values: Sequence[float]) -> dict[str, float | None]:
    """The two quantiles the stage tables show."""
    return summary(values, ("p50", "p99"))


def fmt_ms(value: float | None, timeout_s: float | None = None, *, limit_in_s: bool = False) -> str:
    """Milliseconds for a table: `-` for none, `>timeout` for a failure (inf)."""
    if value is None:
        return "-"
    if math.isinf(value):
        if timeout_s is None:
            return "inf"
        return f">{timeout_s:g}s" if limit_in_s else f">{timeout_s * 1000:.0f}"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def timeline(arrivals: Sequence[float], start: float, buckets: int = 30) -> str:
    """Arrivals per second since `start` (the first `buckets` seconds), space-separated."""
    if not arrivals:
        return ""
    counts = Counter(int(t - start) for t in arrivals)
    last = min(int(max(arrivals) - start), buckets - 1)
    return " ".join(str(counts.get(s, 0)) for s in range(last + 1))


def rounded(value: Any, digits: int = 2) -> Any:
    """A JSON-ready copy: floats rounded, infinities as None, containers walked."""
    if isinstance(value, float):
        return None if math.isinf(value) or math.isnan(value) else round(value, digits)
    if isinstance(value, Mapping):
        return {str(k): rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value
