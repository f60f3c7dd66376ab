"""The organisation's policy as one validated file, and the process settings from the environment.

Policy (departments, agents, tiers, SLA targets, rules) is data: the workflow receives the values
it needs through activities or reads them from this pure model, never from disk.
"""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticketflow.calendar import BusinessCalendar, TimeZoneName, add_business_seconds
from ticketflow.event_loop import DEFAULT_EVENT_LOOP, EventLoop
from ticketflow.models import Channel, CustomerType, Priority, Region

Key = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
TIERS = (1, 2, 3, 4)
Metric = Literal["first_response", "next_reply", "resolution"]
METRICS: tuple[Metric, ...] = ("first_response", "next_reply", "resolution")
Hours = Literal["business", "calendar"]
# Ten years: longer targets, budgets and delays are typos, and far enough out a deadline overflows a datetime.
MAX_MINUTES = 10 * 366 * 24 * 60
Minutes = Annotated[float, Field(gt=0, le=MAX_MINUTES)]


class _Cfg(BaseModel):
    # no inf or nan: "inf" is valid TOML and greater than 0, but no deadline can be placed at it
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Agent(_Cfg):
    id: Key
    name: str
    email: str
    tiers: list[int] = Field(min_length=1)
    languages: list[str] = Field(default_factory=lambda: ["en"])
    skills: list[str] = Field(default_factory=list)  # categories this agent knows best
    away: bool = False  # on leave: not assigned while anyone else can take the ticket
    calendar: Key | None = None  # the agent's shift; none means the department's hours

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: list[int]) -> list[int]:
        bad = [t for t in v if t not in TIERS]
        if bad:
            raise ValueError(f"tiers must be within 1-4, got {bad}")
        return v


class Department(_Cfg):
    name: str
    email: str  # sender address for this department's mail
    lead: str  # address of the department lead (escalation and breach notices)
    timezone: TimeZoneName = "UTC"
    calendar: Key | None = None  # a key of [calendars]; none means open around the clock
    assignment: Literal["round_robin", "least_loaded", "skills"] = "round_robin"
    signature: str = ""
    # The signature per customer language (en, de, ...); `signature` is used for any other language.
    signatures: dict[str, str] = Field(default_factory=dict)
    csat_delay_minutes: float | None = Field(default=None, ge=0, le=MAX_MINUTES)  # this department's survey delay
    agents: list[Agent] = Field(min_length=1)

    def signature_for(self, lang: str) -> str:
        return self.signatures.get(lang, self.signature)

    def agents_for(self, tier: int) -> list[Agent]:
        return [a for a in self.agents if tier in a.tiers]


class Tier(_Cfg):
    level: int
    name: str
    budget_minutes: int = Field(gt=0, le=MAX_MINUTES)

    @property
    def budget(self) -> timedelta:
        return timedelta(minutes=self.budget_minutes)


class SlaTarget(_Cfg):
    first_response_minutes: Minutes
    next_reply_minutes: Minutes | None = None
    resolution_minutes: Minutes
    hours: Hours | None = None  # overrides sla.hours for this priority


class SlaOverride(_Cfg):
    """Targets for a slice of tickets (a department, VIP customers, a priority, or a mix). Every
    matching override applies in file order, so put the more specific ones last."""

    name: str
    departments: list[Key] = Field(default_factory=list)
    customer_types: list[CustomerType] = Field(default_factory=list)
    priorities: list[Priority] = Field(default_factory=list)
    factor: float | None = Field(default=None, gt=0, le=10)  # scales every target
    first_response_minutes: Minutes | None = None
    next_reply_minutes: Minutes | None = None
    resolution_minutes: Minutes | None = None
    hours: Hours | None = None

    def matches(self, department: str, priority: Priority, customer_type: CustomerType | None) -> bool:
        return (
            (not self.departments or department in self.departments)
            and (not self.priorities or priority in self.priorities)
            and (not self.customer_types or customer_type in self.customer_types)
        )


class ResolvedSla(BaseModel):
    """The targets one ticket runs on, in seconds, with how each metric counts."""

    seconds: dict[str, int | None]
    hours: dict[str, Hours]  # per metric, and "tier" (which follows resolution)


class Sla(_Cfg):
    reminder_fractions: list[float] = Field(default_factory=lambda: [0.5, 0.75, 0.9])
    hours: Hours = "business"  # how targets and tier budgets count, unless a priority or override says
    metric_hours: dict[Metric, Hours] = Field(default_factory=dict)  # e.g. resolution = "calendar"
    pause_when_pending: list[Metric | Literal["tier"]] = Field(
        default_factory=lambda: [*METRICS, "tier"]  # type: ignore[arg-type]
    )
    # Staff notices for these priorities go out at any hour; the others wait for the department to open.
    notify_out_of_hours: list[Priority] = Field(default_factory=lambda: [Priority.URGENT])
    # A breach of these metrics moves the ticket up one tier (cause "breach").
    escalate_on_breach: list[Metric] = Field(default_factory=lambda: ["resolution"])  # type: ignore[arg-type]
    targets: dict[Priority, SlaTarget]
    overrides: list[SlaOverride] = Field(default_factory=list)

    def resolve(self, department: str, priority: Priority, customer_type: CustomerType | None) -> ResolvedSla:
        base = self.targets[priority]
        minutes: dict[str, float | None] = {
            "first_response": base.first_response_minutes,
            "next_reply": base.next_reply_minutes,
            "resolution": base.resolution_minutes,
        }
        hours: dict[str, Hours] = {m: self.metric_hours.get(m, self.hours) for m in METRICS}
        if base.hours:
            hours = dict.fromkeys(METRICS, base.hours)
        for o in self.overrides:
            if not o.matches(department, priority, customer_type):
                continue
            if o.factor is not None:
                minutes = {k: (v * o.factor if v is not None else None) for k, v in minutes.items()}
            for metric in METRICS:
                value = getattr(o, f"{metric}_minutes")
                if value is not None:
                    minutes[metric] = value
            if o.hours:
                hours = dict.fromkeys(METRICS, o.hours)
        return ResolvedSla(
            seconds={k: (round(v * 60) if v is not None else None) for k, v in minutes.items()},
            hours={**hours, "tier": hours["resolution"]},
        )

    @field_validator("reminder_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("reminder fractions must be strictly between 0 and 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _every_priority(self) -> Self:
        missing = [p.value for p in Priority if p not in self.targets]
        if missing:
            raise ValueError(f"sla.targets is missing priorities: {missing}")
        return self


class CategoryRule(_Cfg):
    """Keywords per language that put a ticket into a category and a department."""

    name: str
    category: Key
    department: Key
    keywords: dict[str, list[str]]
    channels: list[Channel] = Field(default_factory=list)
    customer_types: list[CustomerType] = Field(default_factory=list)


class PriorityRule(_Cfg):
    """Sets a priority (or raises it one step) when keywords, channel or customer type match."""

    name: str
    set: Priority | None = None
    raise_one: bool = False
    keywords: dict[str, list[str]] = Field(default_factory=dict)
    channels: list[Channel] = Field(default_factory=list)
    customer_types: list[CustomerType] = Field(default_factory=list)
    first_time: bool | None = None  # true: only a customer's first ticket

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        if (self.set is None) == (not self.raise_one):
            raise ValueError(f"priority rule {self.name!r}: give exactly one of 'set' or 'raise_one = true'")
        if not (self.keywords or self.channels or self.customer_types or self.first_time is not None):
            raise ValueError(f"priority rule {self.name!r} has no condition")
        return self


class Condition(_Cfg):
    """One test on a ticket. Fields: channel, customer_type, plan, region, language, subject, body, text
    (subject and body), hour (local hour in the department's time zone, 0-23)."""

    field: Literal["channel", "customer_type", "plan", "region", "language", "subject", "body", "text", "hour"]
    op: Literal["in", "not_in", "contains", "regex", "between"]
    value: list[str] | str | list[int]

    @model_validator(mode="after")
    def _shape(self) -> Self:
        import re as _re

        if self.op in ("in", "not_in", "contains") and not isinstance(self.value, list):
            raise ValueError(f"condition on {self.field}: '{self.op}' needs a list of values")
        if self.op == "regex":
            if not isinstance(self.value, str):
                raise ValueError(f"condition on {self.field}: 'regex' needs one pattern")
            try:
                _re.compile(self.value)
            except (_re.error, RecursionError, OverflowError) as e:  # too deeply nested, a{99999999999}
                raise ValueError(f"condition on {self.field}: bad regex {self.value!r}: {e}") from e
        if self.op == "between" and (self.field != "hour" or not isinstance(self.value, list) or len(self.value) != 2):
            raise ValueError("'between' is for hour, with [from, to) hours (to < from wraps midnight)")
        return self


class Actions(_Cfg):
    department: Key | None = None
    priority: Priority | None = None
    category: Key | None = None
    tags: list[str] = Field(default_factory=list)
    assign: Key | None = None
    spam: bool = False


class AutomationRule(_Cfg):
    """A LiveAgent-style automation rule: condition groups combined with all/any, then actions. Rules run
    in file order after the keyword rules; a later rule's actions override an earlier one's."""

    name: str
    match: Literal["all", "any"] = "all"
    conditions: list[Condition] = Field(min_length=1)
    actions: Actions


class Csat(_Cfg):
    """After resolution: wait `delay_minutes` (a department may set its own), send the survey, keep it
    (and reopening by reply) open for `window_minutes`, then close the ticket. One reminder goes out
    `reminder_minutes` after the survey when it is still unanswered (None: no reminder). Fractions of a
    minute are allowed. `scale` is "1-5" or "good_bad" (stored as 5 and 1); a bad answer (1-2) may
    carry one of `bad_reasons`."""

    delay_minutes: float = Field(default=60, ge=0, le=MAX_MINUTES)
    window_minutes: Minutes = 7 * 24 * 60
    reminder_minutes: Minutes | None = 3 * 24 * 60
    scale: Literal["1-5", "good_bad"] = "1-5"
    bad_reasons: list[str] = Field(
        default_factory=lambda: ["slow_response", "not_resolved", "unfriendly", "had_to_repeat", "other"]
    )

    @model_validator(mode="after")
    def _reminder_inside_window(self) -> Self:
        if self.reminder_minutes is not None and self.reminder_minutes >= self.window_minutes:
            raise ValueError(
                f"csat.reminder_minutes ({self.reminder_minutes}) must be shorter than csat.window_minutes "
                f"({self.window_minutes}): the survey closes before the reminder would go out"
            )
        return self


class Pending(_Cfg):
    """While a ticket waits on the customer, remind them once after `reminder_minutes` (None: never)."""

    reminder_minutes: Minutes | None = 2 * 24 * 60


class Classifier(_Cfg):
    """How the trained model is used: only where no category rule matched, and only when confident."""

    min_confidence: float = Field(default=0.5, gt=0, le=1)
    # the training data's queue names -> departments
    queue_departments: dict[str, Key] = Field(default_factory=dict)
    # the training data's priorities -> ours
    priorities: dict[str, Priority] = Field(
        default_factory=lambda: {"high": Priority.HIGH, "medium": Priority.NORMAL, "low": Priority.LOW}
    )


class Config(_Cfg):
    organisation: str
    default_department: Key
    default_priority: Priority = Priority.NORMAL
    languages: list[str]
    regions: dict[Region, TimeZoneName]  # region -> default time zone
    calendars: dict[Key, BusinessCalendar] = Field(default_factory=dict)
    departments: dict[Key, Department]
    tiers: list[Tier]
    sla: Sla
    categories: list[CategoryRule]
    priority_rules: list[PriorityRule] = Field(default_factory=list)
    automation: list[AutomationRule] = Field(default_factory=list)
    csat: Csat = Csat()
    pending: Pending = Pending()
    classifier: Classifier = Classifier()

    @model_validator(mode="after")
    def _references(self) -> Self:
        if self.default_department not in self.departments:
            raise ValueError(f"default_department {self.default_department!r} is not a department")
        levels = sorted(t.level for t in self.tiers)
        if levels != list(TIERS):
            raise ValueError(f"tiers must be exactly levels 1-4, got {levels}")
        for rule in self.categories:
            if rule.department not in self.departments:
                raise ValueError(f"category rule {rule.name!r} names unknown department {rule.department!r}")
        bad = sorted({d for d in self.classifier.queue_departments.values() if d not in self.departments})
        if bad:
            raise ValueError(f"classifier.queue_departments names unknown departments {bad}")
        for auto in self.automation:
            if auto.actions.department and auto.actions.department not in self.departments:
                raise ValueError(f"automation rule {auto.name!r} names unknown department {auto.actions.department!r}")
        for o in self.sla.overrides:
            unknown = [d for d in o.departments if d not in self.departments]
            if unknown:
                raise ValueError(f"sla override {o.name!r} names unknown departments {unknown}")
        for key, dept in self.departments.items():
            if dept.calendar is not None and dept.calendar not in self.calendars:
                raise ValueError(
                    f"department {key!r} names calendar {dept.calendar!r}, which is not in [calendars]"
                    f" (defined: {sorted(self.calendars) or 'none'})"
                )
            for agent in dept.agents:
                if agent.calendar is not None and agent.calendar not in self.calendars:
                    raise ValueError(
                        f"agent {agent.id!r} names calendar {agent.calendar!r}, which is not in [calendars]"
                        f" (defined: {sorted(self.calendars) or 'none'})"
                    )
            if not dept.agents_for(1):
                raise ValueError(f"department {key!r} has no tier-1 agent")
        return self

    def calendar_of(self, department: str) -> BusinessCalendar | None:
        key = self.departments[department].calendar
        return self.calendars[key] if key else None

    def clock_due(self, department: str, since: datetime, seconds_left: float, business: bool) -> datetime:
        """When a running SLA clock reaches its target: `seconds_left` of the department's open time after `since`
        for a business-hours clock, of calendar time otherwise (and for a department this policy no longer has)."""
        cal = self.calendar_of(department) if business and department in self.departments else None
        left = max(0.0, seconds_left)
        return add_business_seconds(cal, since, left) if cal is not None else since + timedelta(seconds=left)

    def tier(self, level: int) -> Tier:
        return next(t for t in self.tiers if t.level == level)


def load_config(path: Path | None = None) -> Config:
    """Load and validate a policy file; a bad file raises with every field error named."""
    try:
        if path is None:
            text = resources.files("ticketflow").joinpath("default_config.toml").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except (ValueError, RecursionError) as err:  # not UTF-8, nested too deeply, an integer of 4,300+ digits
        raise tomllib.TOMLDecodeError(f"{path or 'the default policy'} is not valid TOML: {err}") from None
    return Config.model_validate(data)


@lru_cache(maxsize=1)
def default_config() -> Config:
    return load_config()


WorkflowSandbox = Literal["strict", "shared", "off"]
# The worker process's sandbox unless TICKETFLOW_WORKFLOW_SANDBOX says otherwise. `off`: paired against `shared`,
# the default before it, 1.09-1.11x its intake at 0.83-0.91x the worker's CPU per ticket; `shared` was 1.16x
# strict's (README, Performance). What the sandbox refuses at run time the tests refuse first: they and
# `worker.build_worker` run `strict`, and tests/test_workflow_code.py reads the workflow modules' source.
DEFAULT_SANDBOX: WorkflowSandbox = "off"


class Settings(BaseSettings):
    """Process settings (where things run), from TICKETFLOW_* variables or a .env file."""

    model_config = SettingsConfigDict(env_prefix="TICKETFLOW_", env_file=".env", extra="ignore")

    config_file: Path | None = None
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "ticketflow"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # business metrics (prometheus-client); 0 disables
    sdk_metrics_port: int = 9465  # Temporal SDK worker metrics; 0 disables
    state_dir: Path = Path(".state")
    intake_smtp_host: str = "127.0.0.1"
    intake_smtp_port: int = 2525  # inbound mail that becomes tickets; 0 disables it in `ticketflow dev`
    intake_http_host: str = "127.0.0.1"
    intake_http_port: int = 8088  # web form / chat / API intake; 0 disables it in `ticketflow dev`
    intake_metrics_port: int = 0  # /metrics of `ticketflow mail-intake` on its own (http-intake serves /metrics)
    db_pool_max: int = 10
    workflow_sandbox: WorkflowSandbox = DEFAULT_SANDBOX  # "strict", "shared" or "off": see worker.sandbox_runner
    event_loop: EventLoop = DEFAULT_EVENT_LOOP  # the worker process's: "uvloop" or "asyncio" (ticketflow.event_loop)
    # Tickets a worker keeps in memory between their workflow tasks (the SDK's max_cached_workflows, about
    # 0.15 MiB each, 0.4 with the strict sandbox; each full garbage collection walks them all). Size it for the
    # tickets that wake together (Monday 09:00): past it, each wake-up replays the ticket's history
    # (bench.scale). 0 keeps none.
    workflow_cache: int = Field(default=1000, ge=0)
    # How often a worker brings SLA clock rows up to their events (activities/clocks.py, reconcile): rows that a
    # worker of a release before migration 0009 left behind in a rolling upgrade. It also runs at each start.
    clock_reconcile_seconds: float = Field(default=60.0, gt=0)
    survey_http_host: str = "127.0.0.1"
    survey_http_port: int = 8089  # the CSAT survey pages; 0 disables them in `ticketflow dev`
    survey_url: str = "http://127.0.0.1:8089"  # public base URL of the survey pages, used in survey links
    survey_secret: SecretStr | None = None  # HMAC key of survey links; `ticketflow dev` keeps one in .state
    model_dir: Path | None = None  # a model from `ticketflow train`; categorisation uses it after the rules
    codec_keys: SecretStr | None = None  # "keyid:base64key,..." encrypts payloads (ticketflow.codec); first encrypts
    # `--as` of list/show/report: an agent id or e-mail or a lead's address (ticketflow.access); unset: operator
    viewer: str | None = Field(default=None, validation_alias="TICKETFLOW_AS")

    def policy(self) -> Config:
        return load_config(self.config_file) if self.config_file else default_config()


_SECRET_WORDS = ("secret", "password", "keys", "token")


def settings_problems(err: ValidationError) -> str:
    """Each bad setting named as the user set it (the environment variable), with what is wrong; the value is
    shown unless the setting is a secret."""
    lines = []
    for e in err.errors(include_url=False):
        field = str(e["loc"][0]) if e["loc"] else ""
        info = Settings.model_fields.get(field)
        alias = info.validation_alias if info is not None else None
        name = alias if isinstance(alias, str) else f"TICKETFLOW_{field.upper()}"
        secret = any(w in field for w in _SECRET_WORDS)
        shown = "" if secret or e["type"] == "missing" else f" (got {e['input']!r})"
        lines.append(f"  {name}: {e['msg']}{shown}")
    return "invalid settings:\n" + "\n".join(lines)
