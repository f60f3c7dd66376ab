"""Choosing an agent within a department's tier queue: pure, so each strategy is tested as a table.

Strategies (per department): round-robin over the agents on shift, least-loaded (fewest open
tickets), or skills (language and category match first, then the least loaded). Agents marked away
or off shift are skipped while anyone else is on shift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ticketflow.calendar import BusinessCalendar, is_open

Strategy = Literal["round_robin", "least_loaded", "skills"]


@dataclass(frozen=True)
class Candidate:
    id: str
    languages: tuple[str, ...]
    skills: tuple[str, ...]
    away: bool = False
    calendar: BusinessCalendar | None = None


def on_shift(agents: Sequence[Candidate], at: datetime) -> tuple[list[Candidate], str]:
    """Agents present at `at`; if nobody is, everyone not away (the queue still needs an owner)."""
    present = [a for a in agents if not a.away]
    working = [a for a in present if a.calendar is None or is_open(a.calendar, at)]
    if working:
        skipped = len(agents) - len(working)
        return working, (f"{skipped} away or off shift; " if skipped else "")
    return present, "nobody on shift, assigned for the next shift; " if present else ""


def choose(
    agents: Sequence[Candidate],
    strategy: Strategy,
    *,
    cursor: int,
    loads: Mapping[str, int],
    language: str | None,
    category: str | None,
) -> tuple[Candidate, str]:
    """The agent for a ticket and why. `cursor` is the queue's round-robin counter."""
    if not agents:
        raise ValueError("no agent to choose from")
    if strategy == "round_robin":
        pick = agents[cursor % len(agents)]
        return pick, f"round-robin {cursor % len(agents) + 1}/{len(agents)}"
    pool = list(agents)
    why = ""
    if strategy == "skills":

        def score(a: Candidate) -> int:
            return (2 if language and language in a.languages else 0) + (1 if category and category in a.skills else 0)

        best = max(score(a) for a in pool)
        pool = [a for a in pool if score(a) == best]
        matched = [w for w, ok in (("language", best >= 2), ("skill", best % 2 == 1)) if ok]
        why = f"skills ({' and '.join(matched) or 'no match'}), then "
    least = min(loads.get(a.id, 0) for a in pool)
    pool = [a for a in pool if loads.get(a.id, 0) == least]
    pick = pool[cursor % len(pool)]  # ties rotate instead of always hitting the first agent
    return pick, f"{why}least loaded ({least} open)"
