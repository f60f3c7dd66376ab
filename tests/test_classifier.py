"""The learned categorisation: trained on a split of the shared data it beats the majority baseline on
the held-out rows; it only decides where no rule matched and only when confident; the CLI scores it."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from pathlib import Path

from activities.classifier import Example, TicketClassifier, evaluate, majority_baseline, read_examples
from ticketflow.config import Config
from ticketflow.models import TicketIn
from ticketflow.rules import categorise

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tickets-multilang.csv"


def test_the_shared_datasets_are_beside_the_project() -> None:
    """The dataset tests need ../shared/datasets (CI clones the project beside it): missing is a failure."""
    assert SHARED.exists(), f"{SHARED} is missing: put ../shared beside the project"


def tiny() -> list[Example]:
    """A small labelled set made here, so the plumbing is tested even without the shared data."""
    rnd = random.Random(3)
    words = {
        "Billing and Payments": ["invoice", "refund", "charged", "payment"],
        "IT Support": ["laptop", "vpn", "printer", "password"],
        "Sales and Pre-Sales": ["quote", "pricing", "demo", "licence"],
    }
    out = []
    for queue, vocab in words.items():
        for i in range(30):
            text = f"Question {i}\\n" + " ".join(rnd.choices(vocab, k=6))
            labels = {
                "queue": queue,
                "priority": rnd.choice(["high", "low"]),
                "type": rnd.choice(["Request", "Incident"]),
            }
            out.append(Example(text, labels))
    return out


def ticket(subject: str, body: str) -> TicketIn:
    return TicketIn.model_validate(
        {"subject": subject, "body": body, "channel": "email", "customer": {"name": "A", "email": "a@example.com"}}
    )


def test_model_decides_only_where_rules_did_not_and_when_confident(tmp_path: Path, config: Config) -> None:
    model = TicketClassifier.train(tiny())
    model.save(tmp_path)
    loaded = TicketClassifier.load(tmp_path)
    text = "Need a proper quote and pricing for a demo"
    prediction = loaded.predict(text)
    assert prediction["queue"][0] == "Sales and Pre-Sales"

    # the sales keyword rule would match "quote"/"pricing": rules first, the model is not consulted
    ruled = categorise(ticket("Quote", text), config, prediction)
    assert ruled.department == "sales" and "model" not in ruled.reasons[1]
    # no rule matches this wording: a confident model decides, and says so
    unmatched = categorise(
        ticket("Hello", "zzz qqq"), config, {"queue": ("IT Support", 0.9), "priority": ("high", 0.8)}
    )
    assert unmatched.department == "it" and "model says 'IT Support' (p=0.90)" in unmatched.reasons[1]
    assert unmatched.priority == "high" and "model says 'high'" in " ".join(unmatched.reasons)
    unsure = categorise(ticket("Hello", "zzz qqq"), config, {"queue": ("IT Support", 0.3)})
    assert unsure.department == config.default_department and "model unsure" in unsure.reasons[1]


def test_trained_on_a_split_it_beats_the_majority_class(tmp_path: Path) -> None:
    examples = read_examples(SHARED)
    rnd = random.Random(11)
    rnd.shuffle(examples)
    cut = int(len(examples) * 0.8)
    train, held_out = examples[:cut], examples[cut:]
    model = TicketClassifier.train(train)
    scores = {s.target: s for s in evaluate(held_out, model)}
    baseline = {s.target: s for s in majority_baseline(held_out)}
    for target in ("queue", "priority", "type"):
        assert scores[target].accuracy > baseline[target].accuracy, target
        assert scores[target].macro_f1 > baseline[target].macro_f1, target

    model.save(tmp_path / "model")
    test_csv = tmp_path / "held_out.csv"
    with SHARED.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with test_csv.open("w", newline="", encoding="utf-8") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows[:150])
    result = subprocess.run(
        [sys.executable, "-m", "starter.cli", "evaluate", str(test_csv), "--model", str(tmp_path / "model")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[queue]" and lines[1].startswith("accuracy: 0.") and lines[2].startswith("macro-F1: 0.")
    assert "confusion matrix" in lines[3]
