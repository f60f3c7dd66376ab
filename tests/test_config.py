"""The policy file: the default loads and is valid; broken policies fail with errors naming the problem.
Pure unit tests; no servers."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ticketflow.config import TIERS, Config, default_config, load_config
from ticketflow.models import Priority

DEFAULT_TOML = resources.files("ticketflow").joinpath("default_config.toml").read_text("utf-8")


@pytest.fixture
def raw() -> dict[str, Any]:
    """A fresh, mutable copy of the default policy as plain data."""
    return copy.deepcopy(tomllib.loads(DEFAULT_TOML))


def test_default_config_loads_and_is_valid() -> None:
    cfg = default_config()
    assert isinstance(cfg, Config)
    assert cfg.organisation == "Northwind Cloud"
    assert set(cfg.departments) == {"technical_support", "billing", "sales", "customer_service", "it", "hr", "returns"}
    assert len(cfg.departments) == 7
    assert cfg.default_department in cfg.departments
    assert cfg.default_priority is Priority.NORMAL
    assert sorted(t.level for t in cfg.tiers) == [1, 2, 3, 4] == list(TIERS)
    assert all(cfg.tier(level).budget_minutes > 0 for level in TIERS)
    assert cfg.tier(1).budget.total_seconds() == 240 * 60


def test_every_priority_has_sla_targets() -> None:
    cfg = default_config()
    assert set(cfg.sla.targets) == set(Priority)
    for priority, target in cfg.sla.targets.items():
        assert target.first_response_minutes > 0, priority
        assert target.resolution_minutes >= target.first_response_minutes, priority
    # a more urgent priority never has a looser target
    ordered = sorted(Priority, key=lambda p: p.rank)
    firsts = [cfg.sla.targets[p].first_response_minutes for p in ordered]
    assert firsts == sorted(firsts)
    assert all(0 < f < 1 for f in cfg.sla.reminder_fractions)


def test_every_department_has_a_tier_one_agent() -> None:
    cfg = default_config()
    for key, dept in cfg.departments.items():
        assert dept.agents_for(1), key
        assert all(set(a.tiers) <= set(TIERS) for a in dept.agents), key


def test_every_tier_is_staffed_somewhere() -> None:
    cfg = default_config()
    for level in TIERS:
        assert any(d.agents_for(level) for d in cfg.departments.values()), level


def test_rules_reference_known_departments_and_languages() -> None:
    cfg = default_config()
    for rule in cfg.categories:
        assert rule.department in cfg.departments, rule.name
        assert set(rule.keywords) <= set(cfg.languages), rule.name
    for prule in cfg.priority_rules:
        assert set(prule.keywords) <= set(cfg.languages), prule.name


def test_default_config_is_cached_and_equal_to_a_fresh_load() -> None:
    assert default_config() is default_config()
    assert load_config() == default_config()


def test_raw_copy_round_trips(raw: dict[str, Any]) -> None:
    assert Config.model_validate(raw) == default_config()


# --- invalid policies ------------------------------------------------------------------------------


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        target: Any = d
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def _drop(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        target: Any = d
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return edit


def _only_tier(dept: str, index: int, tiers: list[int]) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        for i, agent in enumerate(d["departments"][dept]["agents"]):
            if i == index:
                agent["tiers"] = tiers
            elif 1 in agent["tiers"]:
                agent["tiers"] = [t for t in agent["tiers"] if t != 1] or [4]

    return edit


def _tiers(levels: list[int]) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        d["tiers"] = [{"level": lv, "name": f"L{lv}", "budget_minutes": 60} for lv in levels]

    return edit


def _append_priority_rule(rule: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        d["priority_rules"].append(rule)

    return edit


INVALID: list[Any] = [
    pytest.param(
        _set(("default_department",), "legal"),
        (),
        "default_department 'legal' is not a department",
        id="unknown-default-department",
    ),
    pytest.param(_tiers([1, 2, 3]), (), "tiers must be exactly levels 1-4, got [1, 2, 3]", id="three-tiers"),
    pytest.param(_tiers([1, 2, 3, 4, 5]), (), "tiers must be exactly levels 1-4, got [1, 2, 3, 4, 5]", id="five-tiers"),
    pytest.param(_tiers([1, 2, 3, 3]), (), "tiers must be exactly levels 1-4, got [1, 2, 3, 3]", id="duplicate-tier"),
    pytest.param(_tiers([0, 1, 2, 3]), (), "tiers must be exactly levels 1-4, got [0, 1, 2, 3]", id="tier-zero"),
    pytest.param(
        _set(("tiers", 0, "budget_minutes"), 0), ("tiers", 0, "budget_minutes"), "greater than 0", id="zero-budget"
    ),
    pytest.param(
        _set(("categories", 2, "department"), "legal"),
        (),
        "category rule 'returns' names unknown department 'legal'",
        id="category-unknown-department",
    ),
    pytest.param(
        _set(("departments", "hr", "timezone"), "Mars/Olympus_Mons"),
        ("departments", "hr", "timezone"),
        "unknown time zone 'Mars/Olympus_Mons'",
        id="unknown-time-zone",
    ),
    pytest.param(
        _set(("departments", "billing", "timezone"), "../etc/passwd"),
        ("departments", "billing", "timezone"),
        "unknown time zone '../etc/passwd'",
        id="time-zone-path",
    ),
    pytest.param(
        _set(("sla", "reminder_fractions"), [0.5, 1.0]),
        ("sla", "reminder_fractions"),
        "reminder fractions must be strictly between 0 and 1",
        id="reminder-fraction-one",
    ),
    pytest.param(
        _set(("sla", "reminder_fractions"), [0.0, 0.5]),
        ("sla", "reminder_fractions"),
        "reminder fractions must be strictly between 0 and 1",
        id="reminder-fraction-zero",
    ),
    pytest.param(
        _set(("sla", "reminder_fractions"), [-0.25]),
        ("sla", "reminder_fractions"),
        "reminder fractions must be strictly between 0 and 1",
        id="reminder-fraction-negative",
    ),
    pytest.param(
        _drop(("sla", "targets", "low")), ("sla",), "sla.targets is missing priorities: ['low']", id="missing-sla-low"
    ),
    pytest.param(
        _set(("sla", "targets"), {"normal": {"first_response_minutes": 60, "resolution_minutes": 600}}),
        ("sla",),
        "sla.targets is missing priorities: ['urgent', 'high', 'low']",
        id="missing-sla-priorities",
    ),
    pytest.param(
        _set(("sla", "targets", "critical"), {"first_response_minutes": 5, "resolution_minutes": 60}),
        ("sla", "targets", "critical", "[key]"),
        "Input should be 'urgent', 'high', 'normal' or 'low'",
        id="unknown-sla-priority",
    ),
    pytest.param(
        _set(("sla", "targets", "high", "first_response_minutes"), 0),
        ("sla", "targets", "high", "first_response_minutes"),
        "greater than 0",
        id="zero-sla-target",
    ),
    pytest.param(
        _set(("priority_rules", 0, "raise_one"), True),
        ("priority_rules", 0),
        "priority rule 'urgent-words': give exactly one of 'set' or 'raise_one = true'",
        id="priority-rule-both-set-and-raise",
    ),
    pytest.param(
        _drop(("priority_rules", 0, "set")),
        ("priority_rules", 0),
        "priority rule 'urgent-words': give exactly one of 'set' or 'raise_one = true'",
        id="priority-rule-neither",
    ),
    pytest.param(
        _set(("priority_rules", 3, "raise_one"), False),
        ("priority_rules", 3),
        "priority rule 'vip-and-partners': give exactly one of 'set' or 'raise_one = true'",
        id="priority-rule-raise-false",
    ),
    pytest.param(
        _append_priority_rule({"name": "everything", "set": "low"}),
        ("priority_rules", 4),
        "priority rule 'everything' has no condition",
        id="priority-rule-without-condition",
    ),
    pytest.param(
        _set(("departments", "it", "agents", 0, "tiers"), [1, 5]),
        ("departments", "it", "agents", 0, "tiers"),
        "tiers must be within 1-4, got [5]",
        id="agent-tier-5",
    ),
    pytest.param(
        _set(("departments", "it", "agents", 0, "tiers"), []),
        ("departments", "it", "agents", 0, "tiers"),
        "at least 1 item",
        id="agent-without-tiers",
    ),
    pytest.param(
        _only_tier("hr", 0, [2]), (), "department 'hr' has no tier-1 agent", id="department-without-tier-1-agent"
    ),
    pytest.param(
        _set(("departments", "sales", "agents"), []),
        ("departments", "sales", "agents"),
        "at least 1 item",
        id="department-without-agents",
    ),
    pytest.param(
        _set(("departments", "Legal Team"), copy.deepcopy(tomllib.loads(DEFAULT_TOML)["departments"]["hr"])),
        ("departments", "Legal Team", "[key]"),
        "should match pattern",
        id="bad-department-key",
    ),
    pytest.param(
        _set(("default_priority",), "critical"),
        ("default_priority",),
        "Input should be 'urgent', 'high', 'normal' or 'low'",
        id="unknown-default-priority",
    ),
    pytest.param(
        _set(("regions", "MARS"), "UTC"),
        ("regions", "MARS", "[key]"),
        "Input should be 'NA', 'EU', 'APAC', 'LATAM' or 'MEA'",
        id="unknown-region",
    ),
    pytest.param(
        _set(("categories", 0, "channels"), ["fax"]),
        ("categories", 0, "channels", 0),
        "Input should be 'email'",
        id="category-unknown-channel",
    ),
    pytest.param(_set(("colour",), "blue"), ("colour",), "Extra inputs are not permitted", id="unknown-key"),
    pytest.param(_drop(("organisation",)), ("organisation",), "Field required", id="missing-organisation"),
]


@pytest.mark.parametrize(("edit", "loc", "fragment"), INVALID)
def test_invalid_config_is_rejected_with_a_clear_error(
    raw: dict[str, Any], edit: Callable[[dict[str, Any]], None], loc: tuple[Any, ...], fragment: str
) -> None:
    edit(raw)
    with pytest.raises(ValidationError) as caught:
        Config.model_validate(raw)
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [loc], errors
    assert fragment in errors[0]["msg"], errors[0]["msg"]


def test_reminder_fractions_are_sorted_and_deduplicated(raw: dict[str, Any]) -> None:
    raw["sla"]["reminder_fractions"] = [0.9, 0.5, 0.9, 0.25]
    assert Config.model_validate(raw).sla.reminder_fractions == [0.25, 0.5, 0.9]


def test_config_is_frozen() -> None:
    cfg = default_config()
    with pytest.raises(ValidationError):
        cfg.default_department = "billing"  # type: ignore[misc]


def test_unknown_region_time_zone_is_rejected(raw: dict[str, Any]) -> None:
    raw["regions"]["EU"] = "Europe/Atlantis"
    with pytest.raises(ValidationError, match="unknown time zone"):
        Config.model_validate(raw)


# --- load_config from a file -----------------------------------------------------------------------


def test_load_config_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(DEFAULT_TOML.replace('organisation = "Northwind Cloud"', 'organisation = "Acme"'), "utf-8")
    cfg = load_config(path)
    assert cfg.organisation == "Acme"
    assert cfg.departments == default_config().departments


def test_load_config_from_a_bad_file_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        DEFAULT_TOML.replace('default_department = "customer_service"', 'default_department = "legal"'), "utf-8"
    )
    with pytest.raises(ValidationError, match="default_department 'legal' is not a department"):
        load_config(path)


def test_load_config_reports_toml_syntax_errors(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('organisation = "unterminated\n', "utf-8")
    with pytest.raises(tomllib.TOMLDecodeError):
        load_config(path)


def test_a_policy_without_its_calendars_says_where_the_missing_calendar_belongs(raw: dict[str, Any]) -> None:
    """Found by test_fuzz: with [calendars] deleted, the refusal named the calendar but not the section."""
    del raw["calendars"]
    with pytest.raises(ValidationError, match=r"names calendar '\w+', which is not in \[calendars\] \(defined: none\)"):
        Config.model_validate(raw)
