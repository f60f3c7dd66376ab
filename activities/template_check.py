"""`ticketflow templates check`: render every template in every language with sample data.

A template that fails to render (a typo'd variable, broken syntax, a missing file in a shipped
language) is found here, before a customer's acknowledgement fails in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from activities.mail import CUSTOMER_TEMPLATES, FALLBACK, LANGUAGES, STAFF_TEMPLATES, Templates
from ticketflow.config import Config

# Customer text that tries to run as a template or inject markup and headers: it must come out inert.
HOSTILE_SUBJECT = "{{ 7*7 }} {% raw %}<script>alert(1)</script>\r\nBcc: victim@example.com"


@dataclass(frozen=True)
class Problem:
    language: str
    template: str
    error: str

    def __str__(self) -> str:
        return f"{self.language}/{self.template}: {self.error}"


def sample_context(config: Config, lang: str, scale: str) -> dict[str, Any]:
    dept_key = config.default_department
    dept = config.departments[dept_key]
    choices = [5, 1] if scale == "good_bad" else [1, 2, 3, 4, 5]
    return {
        "organisation": config.organisation,
        "ticket": {
            "id": "abcdefghijkl",
            "customer_name": "Ana <b>Pop</b>",
            "subject": HOSTILE_SUBJECT,
            "priority": "high",
            "tier": 2,
            "assignee": "sofia",
        },
        "ticket_ref": "#abcdefghijkl",
        "department": dept,
        "signature": dept.signature_for(lang),
        "context": {
            "from_tier": 1,
            "to_tier": 2,
            "cause": "breach",
            "reason": "first_response SLA breached at tier 1",
            "metric": "first_response",
            "fraction": 0.75,
            "target_seconds": 3600,
        },
        "first_response_due": "2026-11-24 10:00 CET",
        "due_at": "2026-11-24 10:00 CET",
        "opens_at": "Monday 2026-11-23 08:00 CET",
        "message": {"author": "sofia", "body": "Thanks, {{ this }} is fixed.\n<b>not bold</b>"},
        "agent_name": "Sofia Rossi",
        "recipient_name": "Sofia Rossi",
        "reopen_days": 7,
        "survey_closes": "2026-11-30 10:00 CET",
        "survey": {
            "scale": scale,
            "choices": [{"score": c, "url": f"https://help.example.com/survey/TOKEN?score={c}"} for c in choices],
        },
    }


def check(templates: Templates, config: Config) -> list[Problem]:
    problems: list[Problem] = []
    for lang in sorted(set(LANGUAGES) | set(templates.languages())):
        names = CUSTOMER_TEMPLATES + (STAFF_TEMPLATES if lang == FALLBACK else ())
        for name in names:
            if not templates.has(name, lang):
                problems.append(Problem(lang, name, "missing (every shipped language has every customer template)"))
                continue
            for scale in ("1-5", "good_bad"):
                try:
                    mail = templates.render(name, sample_context(config, lang, scale), lang)
                except (TemplateError, KeyError, TypeError, ValueError) as err:
                    problems.append(Problem(lang, name, f"{type(err).__name__}: {err}"))
                    break
                for what, ok in (
                    ("the subject is empty", bool(mail.subject.strip())),
                    ("the subject spans lines", "\n" not in mail.subject and "\r" not in mail.subject),
                    ("customer text ran as a template", "49" not in mail.subject),
                    ("customer markup reached the HTML unescaped", "<script>" not in mail.html),
                    ("the text part is empty", bool(mail.text.strip())),
                ):
                    if not ok:
                        problems.append(Problem(lang, name, what))
    return problems
