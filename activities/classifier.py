"""A classifier trained on labelled ticket history: department (queue), priority and type.

TF-IDF over word and character n-grams (the character ones carry German compounds and accents across
languages) feeding a logistic regression per target. `train`/`evaluate` back the CLI; the worker loads
a trained model from disk and the categorise activity uses it when it is confident enough.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline

TARGETS = ("queue", "priority", "type")
MODEL_FILE = "model.joblib"


@dataclass(frozen=True)
class Example:
    text: str
    labels: dict[str, str]


def read_examples(path: Path) -> list[Example]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in ("subject", "body", *TARGETS) if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return [Example(f"{r['subject']}\n{r['body']}", {t: r[t].strip() for t in TARGETS}) for r in rows if r["body"]]


def pipeline() -> Pipeline:
    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, max_features=50_000)),
            ("chars", TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), max_features=100_000)),
        ]
    )
    return Pipeline(
        [("features", features), ("model", LogisticRegression(max_iter=2000, C=8.0, class_weight="balanced"))]
    )


class TicketClassifier:
    def __init__(self, models: dict[str, Pipeline]) -> None:
        self.models = models

    @classmethod
    def train(cls, examples: Sequence[Example]) -> TicketClassifier:
        texts = [e.text for e in examples]
        return cls({t: pipeline().fit(texts, [e.labels[t] for e in examples]) for t in TARGETS})

    def predict(self, text: str) -> dict[str, tuple[str, float]]:
        """Per target: the label and the model's probability for it."""
        out = {}
        for target, model in self.models.items():
            proba = model.predict_proba([text])[0]
            best = int(proba.argmax())
            out[target] = (str(model.classes_[best]), float(proba[best]))
        return out

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.models, folder / MODEL_FILE)
        (folder / "targets.json").write_text(json.dumps({t: list(m.classes_) for t, m in self.models.items()}))
        return folder / MODEL_FILE

    @classmethod
    def load(cls, folder: Path) -> TicketClassifier:
        return cls(joblib.load(folder / MODEL_FILE))


@dataclass
class Score:
    target: str
    accuracy: float
    macro_f1: float
    labels: list[str]
    matrix: list[list[int]]


def score(target: str, truth: Sequence[str], predicted: Sequence[str]) -> Score:
    labels = sorted(set(truth) | set(predicted))
    return Score(
        target=target,
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(f1_score(truth, predicted, average="macro", zero_division=0)),
        labels=labels,
        matrix=confusion_matrix(truth, predicted, labels=labels).tolist(),
    )


def evaluate(examples: Sequence[Example], model: TicketClassifier | None = None, folds: int = 5) -> list[Score]:
    """Score a trained model on the examples, or cross-validate a fresh one (never train and score on the
    same rows)."""
    texts = [e.text for e in examples]
    scores = []
    for target in TARGETS:
        truth = [e.labels[target] for e in examples]
        if model is not None:
            predicted = list(model.models[target].predict(texts))
        else:
            smallest = min(Counter(truth).values())
            cv = StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=7)
            predicted = list(cross_val_predict(pipeline(), texts, truth, cv=cv))
        scores.append(score(target, truth, predicted))
    return scores


def majority_baseline(examples: Sequence[Example]) -> list[Score]:
    out = []
    for target in TARGETS:
        truth = [e.labels[target] for e in examples]
        top = Counter(truth).most_common(1)[0][0]
        out.append(score(target, truth, [top] * len(truth)))
    return out


def format_scores(scores: Sequence[Score], matrix_for: str = "queue") -> str:
    lines: list[str] = []
    for s in scores:
        lines += [f"[{s.target}]", f"accuracy: {s.accuracy:.3f}", f"macro-F1: {s.macro_f1:.3f}"]
        if s.target == matrix_for:
            width = max(len(label) for label in s.labels)
            lines.append("confusion matrix (rows: truth, columns: predicted, in this order):")
            for label, row in zip(s.labels, s.matrix, strict=True):
                lines.append(f"  {label:<{width}}  " + " ".join(f"{n:4d}" for n in row))
    return "\n".join(lines)


def as_json(scores: Sequence[Score]) -> list[dict[str, Any]]:
    return [{"target": s.target, "accuracy": s.accuracy, "macro_f1": s.macro_f1} for s in scores]
