"""py-spy profiles: record a process, then say where its samples went (component, library, leaf)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path

Rules = tuple[tuple[str, tuple[str, ...]], ...]

# A component rule named DB sends its samples to one "db, caller hidden" group, split by
# the leaf-most driver/SQLAlchemy frame: SQLAlchemy's async layer runs statements in
# greenlets whose stacks start at the sync session, so the caller is not on the stack.
DB = "db:"
DB_MARKERS = ("sqlalchemy/", "asyncpg/", "aiosqlite/", "greenlet", "sqlite3/")
DB_LEAVES: Rules = (
    ("db: aiosqlite thread / sqlite3", ("aiosqlite/", "sqlite3/")),
    ("db: asyncpg driver", ("asyncpg/",)),
    ("db: SQLAlchemy statement build/compile/cache key", ("sqlalchemy/sql/",)),
    ("db: SQLAlchemy session/engine/result/greenlet", ("sqlalchemy/", "greenlet")),
)
ASGI_LEAVES: Rules = (
    ("ASGI: BaseHTTPMiddleware (trace) + anyio", ("starlette/middleware/base.py", "anyio/")),
    ("ASGI: uvicorn + httptools", ("uvicorn/",)),
    ("ASGI: Starlette/FastAPI routing, middleware", ("starlette/", "fastapi/", "shared/http.py")),
    ("event loop, asyncio", ("asyncio/", "uvloop/")),
)
LIBRARIES: Rules = (
    # the leaf-most frame that belongs to one of these packages names the sample
    ("aiosqlite, sqlite3", ("aiosqlite/", "sqlite3/")),
    ("aiosmtplib", ("aiosmtplib/",)),
    ("email (stdlib)", ("/email/",)),
    ("jinja2, markupsafe", ("jinja2/", "markupsafe/")),
    ("httpx, httpcore, h11", ("httpx/", "httpcore/", "h11/")),
    ("ssl (stdlib)", ("/ssl.py",)),
    ("asyncpg", ("asyncpg/",)),
    ("sqlalchemy", ("sqlalchemy/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("email_validator", ("email_validator/",)),
    ("pycountry", ("pycountry/",)),
    ("cryptography, hmac", ("cryptography/", "hmac.py")),
    ("json (stdlib)", ("json/",)),
    ("aiokafka", ("aiokafka/",)),
    ("anyio", ("anyio/",)),
    ("starlette", ("starlette/",)),
    ("fastapi", ("fastapi/",)),
    ("uvicorn", ("uvicorn/",)),
    ("logging", ("logging/", "pythonjsonlogger/")),
    ("threading", ("threading.py", "queue.py")),
    ("asyncio", ("asyncio/",)),
    ("services/ + shared/ (ours)", ("services/", "shared/")),
)
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)",)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def leaf_label(frames: list[str], rules: Rules) -> str | None:
    """The first rule matching the leaf-most frame that any rule matches."""
    for frame in reversed(frames):
        hit = next((n for n, keys in rules if any(k in frame for k in keys)), None)
        if hit:
            return hit
    return None


def read_collapsed(path: Path) -> tuple[list[tuple[list[str], int]], int]:
    """py-spy's collapsed stacks (`--format raw`): (frames, samples) per stack, and the
    samples of idle thread-pool workers (which py-spy without --gil takes as running)."""
    stacks: list[tuple[list[str], int]] = []
    idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        if frames and frames[-1].startswith(IDLE_LEAVES):
            idle += int(count)
            continue
        stacks.append((frames, int(count)))
    return stacks, idle


def summarise(
    path: Path, components: Rules, *, top: int = 15, gil: bool = True, asgi_prefix: str = ""
) -> list[str]:
    """Percentages of the samples: by component (the first rule whose marker is anywhere on
    the stack; `db` is the share inside SQLAlchemy or a driver), by library, by leaf."""
    stacks, idle = read_collapsed(path)
    total = sum(c for _, c in stacks)
    if not total:
        return ["  (no samples)"]
    by_component: Counter[str] = Counter()
    in_db: Counter[str] = Counter()
    hidden: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    hidden_name = "db, caller hidden (greenlet / driver thread)"
    for frames, count in stacks:
        joined = ";".join(frames)
        db = any(k in joined for k in DB_MARKERS)
        name = next((n for n, keys in components if any(k in joined for k in keys)), None)
        if name == DB or (name is None and db):
            name = hidden_name
            hidden[leaf_label(frames, DB_LEAVES) or "db: other"] += count
        elif name is None:
            name = (leaf_label(frames, ASGI_LEAVES) if frames else None) or "other"
            if asgi_prefix and name.startswith("ASGI"):
                name = asgi_prefix + name.removeprefix("ASGI: ")
        by_component[name] += count
        if db:
            in_db[name] += count
        libraries[(leaf_label(frames, LIBRARIES) or "other") if frames else "native"] += count
        leaves[frames[-1] if frames else "(native)"] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    what = (
        "while the process held the GIL (its Python CPU time)"
        if gil
        else "of threads on CPU, GIL held or not (C code that releases it counts too)"
    )
    out = [f"  {total} samples {what}"]
    if idle:
        out.append(f"  ({idle} more of idle thread-pool workers left out)")
    out += [
        "",
        "  by component (first matching rule on the stack; db = of which in SQLAlchemy/driver):",
    ]
    for name, n in by_component.most_common():
        db_share = (
            f"   (db {pct(in_db[name]).strip()})" if in_db[name] and name != hidden_name else ""
        )
        out.append(f"    {pct(n)}  {name}{db_share}")
        if name == hidden_name:
            out += [f"             {pct(m)}  {leaf}" for leaf, m in hidden.most_common()]
    out += ["", "  by library (leaf-most frame in a known package):"]
    out += [f"    {pct(n)}  {name}" for name, n in libraries.most_common()]
    out += ["", f"  top {top} functions by self time:"]
    out += [f"    {pct(n)}  {frame[:110]}" for frame, n in leaves.most_common(top)]
    return out


async def record(
    pid: int,
    seconds: int,
    out: Path,
    *,
    rate: int = 100,
    gil: bool = True,
    subprocesses: bool = False,
    delay: float = 0.0,
) -> list[str]:
    """`py-spy record` the process into `out` (raw collapsed stacks); the command used."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("profiling needs py-spy: .venv/bin/pip install py-spy")
    await asyncio.sleep(delay)
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate)]
    cmd += [*(["--gil"] if gil else []), "--format", "raw", "--output", str(out)]
    cmd += ["--subprocesses"] if subprocesses else []
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")
    return cmd
