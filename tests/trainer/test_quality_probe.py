"""The converged linear probe agrees with scikit-learn's LogisticRegression on the same features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from torch import nn

from kadapt_trainer.probe import DEFAULT_C, SELECTED_BY_DEFAULT, SELECTED_BY_VALIDATION, fit_probe
from tests.trainer import tiny


def _features(model_dir: Path, rows: list[dict[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiny BERT's mean-pooled token states (a frozen backbone's features) and class ids."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    enc = tok([r["text"] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    feats = (hidden * mask).sum(1) / mask.sum(1)
    labels = torch.tensor([tiny.KEYWORDS.index(r["label"]) for r in rows])
    return feats, labels


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("probe")
    model_dir = tiny.make_model(root / "bert", "bert")
    # noisy labels: a fifth of the rows get a wrong class, so the fit is not separable and C matters
    train_rows = tiny.classification_rows(150, seed=3)
    for i in range(0, len(train_rows), 5):
        train_rows[i]["label"] = tiny.KEYWORDS[(tiny.KEYWORDS.index(train_rows[i]["label"]) + 1) % 3]
    tx, ty = _features(model_dir, train_rows)
    vx, vy = _features(model_dir, tiny.classification_rows(60, seed=4))
    return {"tx": tx, "ty": ty, "vx": vx, "vy": vy}


@pytest.mark.parametrize("c", [0.1, 1.0, 100.0])
def test_probe_matches_sklearn_logistic_regression(features: dict[str, torch.Tensor], c: float) -> None:
    tx, ty, vx = features["tx"], features["ty"], features["vx"]
    head = nn.Linear(tx.shape[1], 3)
    result = fit_probe(head, tx, ty, features["vx"], features["vy"], c_grid=(c,), max_iter=1000)
    assert result.c == c and result.selected_by == SELECTED_BY_VALIDATION
    assert result.l2 == pytest.approx(1.0 / (c * len(ty)))

    ref = LogisticRegression(C=c, max_iter=20_000, tol=1e-10).fit(tx.double().numpy(), ty.numpy())
    with torch.no_grad():
        ours_train = head(tx).argmax(-1).numpy()
        ours_val = head(vx).argmax(-1).numpy()
    np.testing.assert_array_equal(ours_train, ref.predict(tx.double().numpy()))
    np.testing.assert_array_equal(ours_val, ref.predict(vx.double().numpy()))
    # the same optimum, not only the same decisions (softmax weights are defined up to a shift per class)
    ours_w = head.weight.detach().double().numpy()
    ref_w = ref.coef_
    tol = 2e-3 * max(1.0, float(np.abs(ref_w).max()))
    np.testing.assert_allclose(ours_w - ours_w.mean(0), ref_w - ref_w.mean(0), atol=tol)
    assert result.val_accuracy == pytest.approx(float((ours_val == features["vy"].numpy()).mean()))


def _by_hand(features: dict[str, torch.Tensor], grid: tuple[float, ...]) -> dict[float, tuple[float, float, float]]:
    """scikit-learn's fit per C: (validation log-loss, its standard error, validation accuracy)."""
    tx, ty, vx, vy = features["tx"], features["ty"], features["vx"], features["vy"]
    out = {}
    for c in grid:
        ref = LogisticRegression(C=c, max_iter=20_000, tol=1e-10).fit(tx.double().numpy(), ty.numpy())
        proba = ref.predict_proba(vx.double().numpy())
        per_example = -np.log(proba[np.arange(len(vy)), vy.numpy()])
        assert float(per_example.mean()) == pytest.approx(log_loss(vy.numpy(), proba, labels=[0, 1, 2]))
        se = float(per_example.std(ddof=1)) / np.sqrt(len(per_example))
        out[c] = (float(per_example.mean()), se, float((ref.predict(vx.double().numpy()) == vy.numpy()).mean()))
    return out


def test_probe_chooses_c_on_validation_loss(features: dict[str, torch.Tensor]) -> None:
    """Validation loss, not accuracy, decides, also where the best validation accuracy is elsewhere."""
    tx, ty, vx, vy = features["tx"], features["ty"], features["vx"], features["vy"]
    grid = (0.01, 0.3, 1.0, 100.0)
    result = fit_probe(nn.Linear(tx.shape[1], 3), tx, ty, vx, vy, c_grid=grid, max_iter=500)
    assert [cand.c for cand in result.candidates] == sorted(grid)
    hand = _by_hand(features, grid)
    best = min(grid, key=lambda c: hand[c][0])
    assert max(grid, key=lambda c: hand[c][2]) != best  # on this data the two criteria disagree
    assert result.min_loss_c == best, (result.min_loss_c, hand)
    assert result.candidates[0].train_accuracy < result.train_accuracy
    assert result.gap == pytest.approx(result.train_accuracy - (result.val_accuracy or 0.0))


def test_probe_one_standard_error_rule_prefers_stronger_regularisation(features: dict[str, torch.Tensor]) -> None:
    """Of the Cs within one standard error of the lowest validation loss, the most regularised wins.

    On a fine grid the neighbours of the minimum differ from it by less than the noise of a
    60-example validation split; the plain minimum (the rule before) picks a weaker
    regularisation than the 1-SE rule does.
    """
    tx, ty, vx, vy = features["tx"], features["ty"], features["vx"], features["vy"]
    grid = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
    result = fit_probe(nn.Linear(tx.shape[1], 3), tx, ty, vx, vy, c_grid=grid, max_iter=1000)
    hand = _by_hand(features, grid)
    lowest = min(grid, key=lambda c: hand[c][0])
    threshold = hand[lowest][0] + hand[lowest][1]
    expected = min(c for c in grid if hand[c][0] <= threshold)
    assert expected < lowest, hand  # the situation the rule is for: the rule and the minimum disagree
    assert result.c == expected, (result.c, hand)
    assert result.min_loss_c == lowest
    assert result.val_loss_threshold == pytest.approx(threshold, rel=1e-3)
    chosen = next(cand for cand in result.candidates if cand.c == expected)
    assert result.val_loss == pytest.approx(hand[expected][0], rel=1e-3)
    assert chosen.val_loss_se == pytest.approx(hand[expected][1], rel=1e-2)
    assert result.selected_by == SELECTED_BY_VALIDATION


def test_probe_without_validation_uses_the_default_c(features: dict[str, torch.Tensor]) -> None:
    tx, ty = features["tx"], features["ty"]
    result = fit_probe(nn.Linear(tx.shape[1], 3), tx, ty)
    assert result.c == DEFAULT_C and result.selected_by == SELECTED_BY_DEFAULT
    assert result.val_accuracy is None and len(result.candidates) == 1
    assert result.as_dict()["regularization"] == "l2"


def test_probe_refuses_empty_features() -> None:
    with pytest.raises(ValueError, match="no training features"):
        fit_probe(nn.Linear(4, 2), torch.empty(0, 4), torch.empty(0, dtype=torch.long))


def test_one_standard_error_rule_with_non_finite_losses_keeps_the_most_regularised() -> None:
    # NaN features give NaN losses everywhere: the rule must not crash, so that training's own
    # NaN check fails the job with its cause (tests/trainer/test_bad_input.py).
    from kadapt_trainer.probe import ProbeCandidate, one_standard_error

    def cand(c: float, loss: float, se: float | None) -> ProbeCandidate:
        return ProbeCandidate(c=c, train_accuracy=0.5, train_loss=loss, val_accuracy=0.5, val_loss=loss,
                              iterations=1, val_loss_se=se)

    nan = float("nan")
    chosen, best, threshold = one_standard_error([cand(0.1, nan, nan), cand(1.0, nan, nan)])
    assert (chosen, best) == (0, 0) and threshold != threshold
    # A NaN among finite losses is left out; a NaN standard error widens nothing.
    chosen, best, threshold = one_standard_error([cand(0.1, nan, None), cand(1.0, 0.80, nan), cand(10.0, 0.70, 0.05)])
    assert (chosen, best, threshold) == (2, 2, 0.75)
    with pytest.raises(ValueError, match="no candidate has a validation loss"):
        one_standard_error([ProbeCandidate(c=1.0, train_accuracy=0.5, train_loss=0.7, val_accuracy=None,
                                           val_loss=None, iterations=1)])
