"""The converged linear probe agrees with scikit-learn's LogisticRegression on the same features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _by_hand(features: dict[str, torch.Tensor], grid: tuple[float, ...]) -> dict[float, dict[str, Any]]:
    """scikit-learn's fit per C, scored on validation: plain log-loss, its standard error, accuracy,
    and the log-loss after temperature scaling (scipy's bounded scalar search over log(1/T))."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    tx, ty, vx, vy = features["tx"], features["ty"], features["vx"], features["vy"]
    y = vy.numpy()
    out = {}
    for c in grid:
        ref = LogisticRegression(C=c, max_iter=20_000, tol=1e-10).fit(tx.double().numpy(), ty.numpy())
        proba = ref.predict_proba(vx.double().numpy())
        per_example = -np.log(proba[np.arange(len(y)), y])
        assert float(per_example.mean()) == pytest.approx(log_loss(y, proba, labels=[0, 1, 2]))
        z = ref.decision_function(vx.double().numpy())

        def scaled(log_scale: float, z: np.ndarray = z) -> float:
            return float(-log_softmax(z * np.exp(log_scale), axis=1)[np.arange(len(y)), y].mean())

        best = minimize_scalar(scaled, bounds=(-10, 10), method="bounded", options={"xatol": 1e-8})
        per_scaled = -log_softmax(z * np.exp(best.x), axis=1)[np.arange(len(y)), y]
        out[c] = {
            "per_example_scaled": per_scaled,
            "loss": float(per_example.mean()),
            "se": float(per_example.std(ddof=1)) / np.sqrt(len(per_example)),
            "accuracy": float((ref.predict(vx.double().numpy()) == y).mean()),
            "scaled": float(best.fun),
            "temperature": float(np.exp(-best.x)),
        }
    return out


def test_probe_records_the_plain_validation_loss_path(features: dict[str, torch.Tensor]) -> None:
    """Each candidate's plain validation loss, its standard error and the lowest-loss C are recorded."""
    tx, ty, vx, vy = features["tx"], features["ty"], features["vx"], features["vy"]
    grid = (0.01, 0.3, 1.0, 100.0)
    result = fit_probe(nn.Linear(tx.shape[1], 3), tx, ty, vx, vy, c_grid=grid, max_iter=500)
    assert [cand.c for cand in result.candidates] == sorted(grid)
    hand = _by_hand(features, grid)
    assert result.min_loss_c == min(grid, key=lambda c: hand[c]["loss"]), hand
    for cand in result.candidates:
        assert cand.val_loss == pytest.approx(hand[cand.c]["loss"], rel=1e-3)
        assert cand.val_loss_se == pytest.approx(hand[cand.c]["se"], rel=1e-2)
    assert result.candidates[0].train_accuracy < result.train_accuracy
    assert result.gap == pytest.approx(result.train_accuracy - (result.val_accuracy or 0.0))


def test_probe_chooses_c_by_temperature_scaled_validation_loss(features: dict[str, torch.Tensor]) -> None:
    """Rescaled validation losses, by hand; C = 1 stays unless another C beats it by over one paired SE.

    On this data the plain loss keeps falling as regularisation weakens (the logits grow more
    confident), so its minimum and the rescaled one disagree: the situation the rule is for.
    """
    tx, ty, vx, vy = features["tx"], features["ty"], features["vx"], features["vy"]
    grid = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
    result = fit_probe(nn.Linear(tx.shape[1], 3), tx, ty, vx, vy, c_grid=grid, max_iter=1000)
    hand = _by_hand(features, grid)
    lowest = min(grid, key=lambda c: (hand[c]["scaled"], c))
    assert lowest != result.min_loss_c, hand  # the rescaled and the plain minimum disagree here
    diff = hand[1.0]["per_example_scaled"] - hand[lowest]["per_example_scaled"]
    gain, se = float(diff.mean()), float(diff.std(ddof=1)) / np.sqrt(len(diff))
    assert result.scaled_min_c == lowest
    assert result.scaled_gain == pytest.approx(gain, rel=1e-2, abs=1e-5)
    assert result.scaled_gain_se == pytest.approx(se, rel=1e-2, abs=1e-5)
    assert result.c == (lowest if gain > se else 1.0), (result.c, gain, se)
    assert result.selected_by == SELECTED_BY_VALIDATION
    for cand in result.candidates:
        assert cand.val_loss_scaled == pytest.approx(hand[cand.c]["scaled"], rel=1e-3, abs=1e-6)
        assert cand.temperature == pytest.approx(hand[cand.c]["temperature"], rel=1e-2)
        assert (cand.val_loss_scaled or 0.0) <= (cand.val_loss or 0.0) + 1e-9  # T = 1 is one of the choices
    assert result.as_dict()["candidates"][0]["temperature"] == result.candidates[0].temperature


def _candidates(scaled: dict[float, float | None]) -> list[Any]:
    from kadapt_trainer.probe import ProbeCandidate

    return [
        ProbeCandidate(c=c, train_accuracy=0.5, train_loss=0.7, val_accuracy=0.5, val_loss=loss, iterations=1,
                       val_loss_scaled=loss)
        for c, loss in scaled.items()
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("spread", "chosen"),
    [
        (0.01, 10.0),  # C = 10 is lower by 0.1 on every example: clearly better, chosen
        (3.0, 1.0),  # the same mean gain buried in noise: C = 1 stays
    ],
)
def test_select_c_moves_off_the_default_only_for_a_clear_gain(spread: float, chosen: float) -> None:
    from kadapt_trainer.probe import select_c

    gen = torch.Generator().manual_seed(0)
    base = torch.rand(100, generator=gen, dtype=torch.float64) + 0.5
    noise = torch.randn(100, generator=gen, dtype=torch.float64) * spread
    losses = [base + 0.2, base, base - 0.1 + noise - noise.mean()]  # C = 0.1, 1, 10
    cands = _candidates({c: float(v.mean()) for c, v in zip((0.1, 1.0, 10.0), losses, strict=True)})
    selection = select_c(cands, losses)
    assert cands[selection.chosen].c == chosen and selection.scaled_min == 2
    assert selection.gain == pytest.approx(0.1) and selection.gain_se == pytest.approx(
        float((losses[1] - losses[2]).std()) / 10
    )
    assert select_c(cands[:2], losses[:2]).chosen == 1  # the default is the lowest: kept, gain 0


def test_probe_without_validation_uses_the_default_c(features: dict[str, torch.Tensor]) -> None:
    tx, ty = features["tx"], features["ty"]
    result = fit_probe(nn.Linear(tx.shape[1], 3), tx, ty)
    assert result.c == DEFAULT_C and result.selected_by == SELECTED_BY_DEFAULT
    assert result.val_accuracy is None and len(result.candidates) == 1
    assert result.as_dict()["regularization"] == "l2"


def test_probe_refuses_empty_features() -> None:
    with pytest.raises(ValueError, match="no training features"):
        fit_probe(nn.Linear(4, 2), torch.empty(0, 4), torch.empty(0, dtype=torch.long))


def test_c_selection_with_non_finite_losses_keeps_the_most_regularised() -> None:
    # NaN features give NaN losses everywhere: the selection must not crash, so that training's
    # own NaN check fails the job with its cause (tests/trainer/test_bad_input.py).
    from kadapt_trainer.probe import select_c, temperature_scaled_losses

    nan = float("nan")
    two = [torch.tensor([nan, nan], dtype=torch.float64)] * 2
    assert select_c(_candidates({0.1: nan, 1.0: nan}), two).chosen == 0  # the smaller C
    # A NaN among finite losses is left out; without C = 1 in the grid the lowest wins, ties the smaller C.
    four = [torch.tensor([v, v], dtype=torch.float64) for v in (nan, 0.8, 0.7, 0.7)]
    assert select_c(_candidates({0.1: nan, 3.0: 0.80, 10.0: 0.70, 100.0: 0.70}), four).chosen == 2
    with pytest.raises(ValueError, match="no candidate has a validation loss"):
        select_c(_candidates({1.0: None}), [])
    t, losses = temperature_scaled_losses(torch.tensor([[nan, 0.0]]), torch.tensor([0]))
    assert t != t and bool(torch.isnan(losses).all())
