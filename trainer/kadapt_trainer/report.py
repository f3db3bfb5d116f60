"""The evaluation report: what a reader needs to judge a classifier, from one confusion matrix.

Accuracy alone hides a model that predicts the frequent class: the report adds macro-F1,
precision, recall, F1 and support per class, the confusion matrix, and the majority-class
baseline (always predicting the training set's most frequent class). A final accuracy not
above that baseline means the model learned nothing useful; the run still ends, but the
result carries ``better_than_baseline: false`` (the operator turns it into a Warning Event
and condition, ``kadapt run`` says so in its summary).

Everything here is plain Python on counts, so each figure is checked against a hand
computation and the same code runs on every rank after the counts are summed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: ``kadapt-result.json`` / ``/progress`` field with the full report of each evaluated split.
REPORT_FIELD = "evaluation"
#: Result field that is False when the final model is no better than the majority class.
BASELINE_FLAG_FIELD = "better_than_baseline"
MACRO_F1 = "macro_f1"
BASELINE_ACCURACY = "baseline_accuracy"


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> list[list[int]]:
    """Counts ``[true][predicted]``.

    Raises:
        ValueError: when the sequences differ in length or hold a class id out of range.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(labels, predictions, strict=True):
        if not (0 <= t < num_classes and 0 <= p < num_classes):
            raise ValueError(f"class id out of range 0..{num_classes - 1}: label {t}, prediction {p}")
        matrix[t][p] += 1
    return matrix


def majority_class(train_labels: Sequence[int]) -> int:
    """The most frequent training class (the smallest id among ties)."""
    if not train_labels:
        raise ValueError("majority_class: no training labels")
    counts = Counter(train_labels)
    top = max(counts.values())
    return min(c for c, n in counts.items() if n == top)


def _ratio(num: float, den: float) -> float:
    """num / den, 0 when den is 0 (scikit-learn's zero_division=0)."""
    return num / den if den else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall, F1 and support of one class."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Baseline:
    """Always predicting the training set's most frequent class."""

    label: str
    accuracy: float
    macro_f1: float


@dataclass(frozen=True)
class EvaluationReport:
    """One split's report (``validation`` or ``test``)."""

    split: str
    examples: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_class: list[ClassMetrics]
    confusion_matrix: list[list[int]]
    labels: list[str]
    majority_baseline: Baseline
    better_than_baseline: bool
    eval_loss: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def headline(self) -> dict[str, float]:
        """The figures for status and ``/progress`` (eval_metrics)."""
        return {MACRO_F1: self.macro_f1, BASELINE_ACCURACY: self.majority_baseline.accuracy}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def classification_report(
    matrix: list[list[int]],
    label_names: Sequence[str],
    majority: int,
    split: str = "validation",
    eval_loss: float | None = None,
) -> EvaluationReport:
    """Every figure of the report from the confusion matrix ``[true][predicted]``.

    Args:
        matrix: counts; rows are true classes, columns predictions.
        label_names: class names by id.
        majority: the training set's most frequent class id (the baseline's constant answer).
        split: which split the counts come from.
        eval_loss: the split's mean loss, carried along.
    """
    n = len(matrix)
    if n != len(label_names):
        raise ValueError(f"confusion matrix has {n} classes but {len(label_names)} label names")
    total = sum(sum(row) for row in matrix)
    support = [sum(row) for row in matrix]
    predicted = [sum(matrix[t][p] for t in range(n)) for p in range(n)]
    per_class = []
    for c in range(n):
        tp = matrix[c][c]
        precision = _ratio(tp, predicted[c])
        recall = _ratio(tp, support[c])
        per_class.append(ClassMetrics(str(label_names[c]), precision, recall, _f1(precision, recall), support[c]))
    accuracy = _ratio(sum(matrix[c][c] for c in range(n)), total)
    macro_f1 = _ratio(sum(m.f1 for m in per_class), n)
    weighted_f1 = _ratio(sum(m.f1 * m.support for m in per_class), total)
    # the constant predictor: precision = its class's share, recall 1 for it, 0 elsewhere
    base_acc = _ratio(support[majority], total)
    base_macro = _ratio(_f1(base_acc, 1.0 if support[majority] else 0.0), n)
    baseline = Baseline(str(label_names[majority]), base_acc, base_macro)
    return EvaluationReport(
        split=split,
        examples=total,
        accuracy=accuracy,
        macro_f1=macro_f1,
        weighted_f1=weighted_f1,
        per_class=per_class,
        confusion_matrix=[list(row) for row in matrix],
        labels=[str(x) for x in label_names],
        majority_baseline=baseline,
        better_than_baseline=beats_baseline(accuracy, base_acc),
        eval_loss=eval_loss,
    )


def beats_baseline(accuracy: float, baseline_accuracy: float, margin: float = 1e-9) -> bool:
    """True when the model's accuracy is strictly above the majority-class baseline's."""
    return accuracy > baseline_accuracy + margin


def baseline_warning(report: EvaluationReport) -> str:
    """The plain sentence for the summary, the Event and the condition."""
    return (
        f"{report.split} accuracy {report.accuracy:.4f} is not better than always predicting the most "
        f"frequent class {report.majority_baseline.label!r} ({report.majority_baseline.accuracy:.4f}): "
        "the model has not learned the task; check the labels, the learning rate and the amount of data"
    )
