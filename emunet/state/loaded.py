"""Which published state each reader of the state file has loaded: the supervisor's answer to
"is this change in effect yet?".

The supervisor numbers every state it publishes (`ClusterState.generation`) and signals its
readers (node agents, L7 proxies, the DNS responder) with SIGHUP. Each reader, once it has
loaded a state and put it into effect, writes that state's generation to
`<run dir>/loaded-<role>` (the supervisor's name for the child: `agent-<node>`,
`l7proxy-<node>`, `dns`), replaced atomically. `wait` polls those files until every running
reader reports the generation, so `emunet apply`, `delete`, `label` and `link` answer only once
the agents forward by the new state, and a client's next packet meets it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PREFIX = "loaded-"


def path(run_dir: Path, role: str) -> Path:
    return run_dir / f"{PREFIX}{role}"


def report(run_dir: Path, role: str, generation: int) -> None:
    """Say `role` now works from the state numbered `generation` (temp file + rename: the
    supervisor never reads half a number). Raises OSError if the run dir is not writable."""
    p = path(run_dir, role)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{generation}\n")
    os.replace(tmp, p)


def generation(run_dir: Path, role: str) -> int | None:
    """The generation `role` last reported, None if it never did (or the file is unreadable)."""
    try:
        return int(path(run_dir, role).read_text())
    except (OSError, ValueError):
        return None


def behind(run_dir: Path, roles: Iterable[str], gen: int) -> list[str]:
    """The roles that have not loaded `gen` (or a later state) yet."""
    return [r for r in roles if (generation(run_dir, r) or 0) < gen]


async def wait(run_dir: Path, gen: int, roles: Callable[[], Iterable[str]], timeout: float,
               poll: float = 0.01) -> list[str]:
    """Poll until every role `roles()` names (asked again each round: a reader that died is
    no longer waited for) has loaded `gen`. Returns the roles still behind when `timeout` ran
    out, [] when all caught up. A reader reloads in milliseconds, so the poll is short."""
    deadline = time.monotonic() + timeout
    while True:
        late = behind(run_dir, roles(), gen)
        if not late or time.monotonic() >= deadline:
            return late
        await asyncio.sleep(poll)
