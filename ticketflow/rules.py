"""Rule-based categorisation: pure functions of a ticket and the policy.

Every decision carries the reasons that produced it, so an agent can see why a ticket landed
where it did.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from ticketflow.config import Condition, Config
from ticketflow.models import Categorisation, Channel, CustomerType, Priority, TicketIn

Prediction = Mapping[str, tuple[str, float]]

# Short, frequent function words: enough to tell these languages apart on a ticket's text.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and is are to of my we you it not have this for with can please".split()),
    "de": frozenset("der die das und ist nicht ich wir sie ein eine mit für bitte kann unser mein".split()),
    "es": frozenset("el la los las y es no mi de que por para con una un puedo favor está".split()),
    "fr": frozenset("le la les et est ne pas je nous vous un une avec pour mon ma votre merci".split()),
    "pt": frozenset("o a os as e é não meu minha de que por para com uma um você obrigado está foi olá".split()),
    "ro": frozenset("și este nu eu noi un o cu pentru meu mea vă vă rog mulțumesc contul".split()),
}
_WORD = re.compile(r"\w+", re.UNICODE)


# Letters of the Greek and Cyrillic blocks (with Greek Extended and Cyrillic Supplement), counted by one
# regex scan instead of a Unicode name lookup per character.
_GREEK = re.compile(r"[\u0386-\u03ff\u1f00-\u1ffe]")
_CYRILLIC = re.compile(r"[\u0400-\u0481\u048a-\u052f]")


def _script_language(text: str) -> str | None:
    greek = sum(1 for ch in _GREEK.findall(text) if ch.isalpha())
    cyrillic = sum(1 for ch in _CYRILLIC.findall(text) if ch.isalpha())
    if greek > 10 and greek >= cyrillic:
        return "el"
    if cyrillic > 10:
        return "ru"
    return None


def detect_language(text: str, supported: Iterable[str], fallback: str = "en") -> tuple[str, str]:
    """Return (language, reason) from script and stop-word counts."""
    allowed = set(supported)
    by_script = _script_language(text)
    if by_script and by_script in allowed:
        return by_script, f"script is {by_script}"
    words = _WORD.findall(text.casefold())
    scores = {lang: sum(1 for w in words if w in stops) for lang, stops in _STOPWORDS.items() if lang in allowed}
    if scores:
        best = max(scores, key=lambda k: scores[k])
        if scores[best] >= 2:
            return best, f"{scores[best]} {best} stop-words"
    return fallback, f"no clear language signal; default {fallback}"


# Variants that keyboards and mail clients produce for the same letter: typographic apostrophes
# (smart punctuation turns "can't" into "can’t") and Romanian s/t with cedilla instead of comma.
_FOLD = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "ş": "ș", "ţ": "ț"})


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().translate(_FOLD).split())


@lru_cache(maxsize=4096)
def _pattern(keyword: str) -> tuple[str, re.Pattern[str]]:
    """The normalised keyword, to rule it out with a plain substring search first (most keywords are
    absent from most tickets, and `in` is many times cheaper than the word-boundary regex), and the regex."""
    kw = normalise(keyword)
    return kw, re.compile(rf"(?<!\w){re.escape(kw)}(?!\w)")


def keyword_hits(
    text: str, keywords: Mapping[str, list[str]], language: str, every_language: bool = False
) -> list[str]:
    """Keywords of the ticket's language (and English, which customers mix in) found in text; with
    `every_language`, those of all languages (for short texts whose language was misjudged)."""
    hits: list[str] = []
    for lang in dict.fromkeys([language, "en", *(keywords if every_language else [])]):
        for kw in keywords.get(lang, []):
            needle, pattern = _pattern(kw)
            if needle in text and kw not in hits and pattern.search(text):
                hits.append(kw)
    return hits


def _conditions_hold(channels: list[Channel], customer_types: list[CustomerType], ticket: TicketIn) -> bool:
    if channels and ticket.channel not in channels:
        return False
    return not customer_types or ticket.customer.type in customer_types


def categorise(
    ticket: TicketIn,
    config: Config,
    prediction: Prediction | None = None,
    *,
    first_time: bool | None = None,
    at: datetime | None = None,
) -> Categorisation:
    """Rules first; where no rule decides, a confident model prediction (target -> (label, probability));
    then the automation rules, whose actions have the last word."""
    text = normalise(f"{ticket.subject}\n{ticket.body}")
    reasons: list[str] = []

    if ticket.customer.language and ticket.customer.language in config.languages:
        language = ticket.customer.language
        reasons.append(f"language {language}: given by the customer")
    else:
        language, why = detect_language(text, config.languages)
        reasons.append(f"language {language}: {why}")

    best: tuple[int, str, str, list[str], str] | None = None
    for every_language in (False, True):
        for rule in config.categories:
            if not _conditions_hold(rule.channels, rule.customer_types, ticket):
                continue
            hits = keyword_hits(text, rule.keywords, language, every_language)
            if hits and (best is None or len(hits) > best[0]):
                best = (len(hits), rule.category, rule.department, hits, rule.name)
        if best:
            break
    if best:
        _, category, department, hits, name = best
        where = "" if not every_language else " (keywords of any language)"
        reasons.append(f"category {category} -> {department}: rule {name!r} matched {hits}{where}")
    else:
        category, department = "general", config.default_department
        queue, p = (prediction or {}).get("queue", ("", 0.0))
        mapped = config.classifier.queue_departments.get(queue)
        if mapped and p >= config.classifier.min_confidence:
            department = mapped
            reasons.append(
                f"category general -> {department}: no category rule matched; model says {queue!r} (p={p:.2f})"
            )
        elif prediction:
            reasons.append(
                f"category general -> {department}: no category rule matched; model unsure "
                f"({queue!r}, p={p:.2f} < {config.classifier.min_confidence})"
            )
        else:
            reasons.append(f"category general -> {department}: no category rule matched")

    priority = config.default_priority
    decided = False
    for prule in config.priority_rules:
        if prule.set is None or decided:
            continue
        if not _conditions_hold(prule.channels, prule.customer_types, ticket):
            continue
        if prule.first_time is not None and prule.first_time != first_time:
            continue
        hits = keyword_hits(text, prule.keywords, language) if prule.keywords else []
        if prule.keywords and not hits:
            continue
        priority, decided = prule.set, True
        reasons.append(f"priority {priority}: rule {prule.name!r}" + (f" matched {hits}" if hits else ""))
    label, p = (prediction or {}).get("priority", ("", 0.0))
    if not decided and label in config.classifier.priorities and p >= config.classifier.min_confidence:
        priority, decided = config.classifier.priorities[label], True
        reasons.append(f"priority {priority}: model says {label!r} (p={p:.2f})")
    if not decided:
        reasons.append(f"priority {priority}: default")
    for prule in config.priority_rules:
        if not prule.raise_one or not _conditions_hold(prule.channels, prule.customer_types, ticket):
            continue
        if prule.first_time is not None and prule.first_time != first_time:
            continue
        if prule.keywords and not keyword_hits(text, prule.keywords, language):
            continue
        raised = Priority(priority).raised()
        if raised != priority:
            reasons.append(f"priority {priority} -> {raised}: rule {prule.name!r}")
            priority = raised

    result = Categorisation(
        category=category, department=department, priority=priority, language=language, reasons=reasons
    )
    return apply_automation(ticket, config, result, text, at)


def _field(cond: Condition, ticket: TicketIn, result: Categorisation, text: str, hour: int) -> str | int:
    c = ticket.customer
    values: dict[str, str | int] = {
        "channel": ticket.channel.value,
        "customer_type": c.type.value,
        "plan": (c.plan or "").casefold(),
        "region": c.region.value if c.region else "",
        "language": result.language,
        "subject": normalise(ticket.subject),
        "body": normalise(ticket.body),
        "text": text,
        "hour": hour,
    }
    return values[cond.field]


def condition_holds(cond: Condition, ticket: TicketIn, result: Categorisation, text: str, hour: int) -> bool:
    value = _field(cond, ticket, result, text, hour)
    if cond.op == "between":
        start, end = (int(v) for v in cond.value)
        h = int(value)
        return start <= h < end if start <= end else (h >= start or h < end)
    if cond.op == "regex":
        raw = {"subject": ticket.subject, "body": ticket.body}.get(cond.field, str(value))
        return (
            re.search(
                str(cond.value), raw if cond.field != "text" else f"{ticket.subject}\n{ticket.body}", re.IGNORECASE
            )
            is not None
        )
    wanted = [str(v).casefold() for v in cond.value] if isinstance(cond.value, list) else [str(cond.value)]
    if cond.op == "contains":
        return any(_pattern(w)[1].search(str(value)) for w in wanted)
    inside = str(value).casefold() in wanted
    return inside if cond.op == "in" else not inside


def apply_automation(
    ticket: TicketIn, config: Config, result: Categorisation, text: str, at: datetime | None
) -> Categorisation:
    for rule in config.automation:
        zone = ZoneInfo(config.departments[result.department].timezone)
        hour = (at or datetime.now(UTC)).astimezone(zone).hour
        checks = [condition_holds(c, ticket, result, text, hour) for c in rule.conditions]
        if not (all(checks) if rule.match == "all" else any(checks)):
            continue
        a = rule.actions
        done = []
        updates: dict[str, object] = {}
        for name in ("department", "priority", "category", "assign"):
            value = getattr(a, name)
            if value is not None:
                updates[name] = value
                done.append(f"{name}={value}")
        if a.tags:
            updates["tags"] = [*result.tags, *(t for t in a.tags if t not in result.tags)]
            done.append(f"tags+={a.tags}")
        if a.spam:
            updates["spam"] = True
            done.append("spam")
        result = result.model_copy(
            update={
                **updates,
                "reasons": [
                    *result.reasons,
                    f"automation {rule.name!r} ({rule.match} of {len(checks)}): {', '.join(done)}",
                ],
            }
        )
    return result
