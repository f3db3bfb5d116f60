"""Every figure of the evaluation report against a hand computation (and scikit-learn)."""

from __future__ import annotations

import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, precision_recall_fscore_support

from kadapt_trainer.report import (
    baseline_warning,
    beats_baseline,
    classification_report,
    confusion_matrix,
    majority_class,
)

# 10 examples, 3 classes; true / predicted
TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PRED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2]
NAMES = ["sport", "politics", "tech"]


def test_confusion_matrix_by_hand() -> None:
    m = confusion_matrix(TRUE, PRED, 3)
    assert m == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    assert m == sk_confusion(TRUE, PRED).tolist()
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        confusion_matrix([0, 1], [0], 3)


def test_report_figures_by_hand() -> None:
    r = classification_report(confusion_matrix(TRUE, PRED, 3), NAMES, majority=0, eval_loss=0.7)
    # accuracy: 2 + 2 + 3 correct of 10
    assert r.accuracy == pytest.approx(0.7) and r.examples == 10 and r.eval_loss == 0.7
    # sport: tp 2, predicted 3 (2 + 1 from politics), support 4 -> P 2/3, R 1/2, F1 = 2PR/(P+R) = 4/7
    # politics: tp 2, predicted 3, support 3 -> P 2/3, R 2/3, F1 2/3
    # tech: tp 3, predicted 4, support 3 -> P 3/4, R 1, F1 6/7
    expected = {"sport": (2 / 3, 1 / 2, 4 / 7, 4), "politics": (2 / 3, 2 / 3, 2 / 3, 3), "tech": (3 / 4, 1.0, 6 / 7, 3)}
    for c in r.per_class:
        p, rec, f1, support = expected[c.label]
        assert (c.precision, c.recall, c.f1) == pytest.approx((p, rec, f1)) and c.support == support
    assert r.macro_f1 == pytest.approx((4 / 7 + 2 / 3 + 6 / 7) / 3)
    assert r.weighted_f1 == pytest.approx((4 / 7 * 4 + 2 / 3 * 3 + 6 / 7 * 3) / 10)
    # the same as scikit-learn's
    p, rec, f1, s = precision_recall_fscore_support(TRUE, PRED, zero_division=0)
    assert [c.precision for c in r.per_class] == pytest.approx(list(p))
    assert [c.recall for c in r.per_class] == pytest.approx(list(rec))
    assert [c.support for c in r.per_class] == list(s)
    assert r.macro_f1 == pytest.approx(f1_score(TRUE, PRED, average="macro"))
    assert r.weighted_f1 == pytest.approx(f1_score(TRUE, PRED, average="weighted"))
    # the majority baseline answers "sport" (4 of 10): accuracy 0.4, F1 of sport 2*0.4*1/1.4, others 0
    assert r.majority_baseline.label == "sport"
    assert r.majority_baseline.accuracy == pytest.approx(0.4)
    assert r.majority_baseline.macro_f1 == pytest.approx((2 * 0.4 / 1.4) / 3)
    assert r.majority_baseline.macro_f1 == pytest.approx(f1_score(TRUE, [0] * 10, average="macro", zero_division=0))
    assert r.better_than_baseline
    assert r.headline() == {"macro_f1": r.macro_f1, "baseline_accuracy": pytest.approx(0.4)}
    d = r.as_dict()
    assert d["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 0, 3]] and d["labels"] == NAMES


def test_a_model_that_predicts_the_majority_class_is_flagged() -> None:
    true = [0, 0, 0, 1, 2]
    r = classification_report(confusion_matrix(true, [0] * 5, 3), NAMES, majority=majority_class([0, 0, 1, 2]))
    assert r.accuracy == pytest.approx(0.6) == r.majority_baseline.accuracy
    assert not r.better_than_baseline
    text = baseline_warning(r)
    assert "not better than always predicting" in text and "'sport'" in text and "0.6000" in text
    # a class that never occurs in the split: precision/recall 0, not a division error
    assert r.per_class[1].precision == 0.0 and r.per_class[2].recall == 0.0


def test_majority_class_and_margin() -> None:
    assert majority_class([2, 1, 2, 1, 0]) == 1  # tie between 1 and 2: the smaller id
    assert majority_class([3, 3, 0]) == 3
    with pytest.raises(ValueError):
        majority_class([])
    assert beats_baseline(0.51, 0.5) and not beats_baseline(0.5, 0.5)
    with pytest.raises(ValueError, match="2 label names"):
        classification_report([[1, 0, 0], [0, 1, 0], [0, 0, 1]], ["a", "b"], majority=0)


def test_the_local_summary_says_it_plainly() -> None:
    from rich.console import Console

    from kadapt_operator.local.runner import RunStatus, RunSummary, summary_table

    r = classification_report(confusion_matrix([0, 0, 0, 1, 2], [0] * 5, 3), NAMES, majority=0)
    summary = RunSummary(
        job="j", status=RunStatus.SUCCEEDED, run_dir="/r", exit_code=0,
        better_than_baseline=False, warnings=[baseline_warning(r)],
    )  # fmt: skip
    assert summary.to_json()["betterThanBaseline"] is False
    assert summary.to_json()["warnings"] == [baseline_warning(r)]
    console = Console(width=200, record=True)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "warning" in text and "not better than always predicting the most frequent class 'sport'" in text
