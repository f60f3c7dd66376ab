"""Who may see which tickets: departments limit who sees their tickets (LiveAgent-style access).

An operator sees every ticket. An agent sees the departments they are listed in; a department lead (the
department's `lead` address) sees the departments they lead. Pure: the policy is passed in, nothing is read.
Enforcement lives in the SDK and the CLI; whoever reaches Temporal or the database directly bypasses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ticketflow.config import Config


class UnknownViewer(ValueError):
    """The identity names no agent and no department lead of the policy."""


class AccessDenied(PermissionError):
    """The viewer asked for a ticket or department outside their departments."""


@dataclass(frozen=True)
class Viewer:
    """Who is asking. `departments` is None for an operator (every ticket), else the keys they may see."""

    identity: str | None = None
    departments: frozenset[str] | None = None

    @classmethod
    def operator(cls) -> Viewer:
        return cls()

    @property
    def is_operator(self) -> bool:
        return self.departments is None

    def describe(self) -> str:
        return "the operator" if self.identity is None else repr(self.identity)

    def sees(self, department: str | None) -> bool:
        """A ticket not routed yet (no department) belongs to nobody's scope, so only operators see it."""
        if self.departments is None:
            return True
        return department is not None and department in self.departments

    def check(self, ticket_id: str, department: str | None) -> None:
        if not self.sees(department):
            where = f"department {department!r}" if department else "no department yet"
            raise AccessDenied(f"{self.describe()} may not see ticket {ticket_id} ({where}); {self._scope_text()}")

    def scope(self, asked: Iterable[str] | None = None) -> list[str] | None:
        """The departments a listing or report covers; None means no restriction (an operator asking for all).

        Asking for a department outside the viewer's is an error rather than an empty answer, so "not
        yours" is never mistaken for "no tickets". A viewer without departments gets an empty list."""
        wanted = list(dict.fromkeys(asked)) if asked else None
        if self.departments is None:
            return wanted
        if wanted is None:
            return sorted(self.departments)
        outside = [d for d in wanted if d not in self.departments]
        if outside:
            names = ", ".join(repr(d) for d in outside)
            raise AccessDenied(f"{self.describe()} may not see department {names}; {self._scope_text()}")
        return wanted

    def _scope_text(self) -> str:
        if not self.departments:
            return "they see no department"
        return f"they see {', '.join(sorted(self.departments))}"


def resolve_viewer(config: Config, identity: str | None) -> Viewer:
    """The viewer for an agent id, an agent's e-mail or a lead's address; None or blank is the operator.

    Ids match exactly, addresses case-insensitively. An agent who is also a lead (by the e-mail of their
    agent entry) sees both sets of departments."""
    if identity is None or not identity.strip():
        return Viewer.operator()
    who = identity.strip()
    addresses = {who.casefold()} if "@" in who else set()
    departments: set[str] = set()
    for key, dept in config.departments.items():
        for agent in dept.agents:
            if agent.id == who or agent.email.casefold() == who.casefold():
                departments.add(key)
                addresses.add(agent.email.casefold())
    led = {key for key, dept in config.departments.items() if dept.lead.casefold() in addresses}
    if not departments and not led:
        ids = sorted({a.id for d in config.departments.values() for a in d.agents})
        raise UnknownViewer(
            f"unknown agent or lead {who!r}: give an agent id or e-mail, or a department lead's address; "
            f"known agent ids: {', '.join(ids)}"
        )
    return Viewer(identity=who, departments=frozenset(departments | led))
