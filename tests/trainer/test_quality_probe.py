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


def test_probe_chooses_c_on_validation_loss(features: dict[str, torch.Tensor]) -> None:
    """The lowest validation loss wins, also where the best validation accuracy is elsewhere."""
    tx, ty, vx, vy = features["tx"], features["ty"], features["vx"], features["vy"]
    grid = (0.01, 0.3, 1.0, 100.0)
    result = fit_probe(nn.Linear(tx.shape[1], 3), tx, ty, vx, vy, c_grid=grid, max_iter=500)
    assert [cand.c for cand in result.candidates] == sorted(grid)
    # by hand with scikit-learn: validation log-loss and accuracy over the grid
    losses, accs = {}, {}
    for c in grid:
        ref = LogisticRegression(C=c, max_iter=20_000, tol=1e-10).fit(tx.double().numpy(), ty.numpy())
        losses[c] = float(log_loss(vy.numpy(), ref.predict_proba(vx.double().numpy()), labels=[0, 1, 2]))
        accs[c] = float((ref.predict(vx.double().numpy()) == vy.numpy()).mean())
    best = min(losses, key=lambda c: losses[c])
    assert max(accs, key=lambda c: accs[c]) != best  # on this data the two criteria disagree
    assert result.c == best, (result.c, losses)
    assert result.val_loss == pytest.approx(losses[best], rel=1e-3)
    assert result.candidates[0].train_accuracy < result.train_accuracy
    assert result.gap == pytest.approx(result.train_accuracy - (result.val_accuracy or 0.0))


def test_probe_without_validation_uses_the_default_c(features: dict[str, torch.Tensor]) -> None:
    tx, ty = features["tx"], features["ty"]
    result = fit_probe(nn.Linear(tx.shape[1], 3), tx, ty)
    assert result.c == DEFAULT_C and result.selected_by == SELECTED_BY_DEFAULT
    assert result.val_accuracy is None and len(result.candidates) == 1
    assert result.as_dict()["regularization"] == "l2"


def test_probe_refuses_empty_features() -> None:
    with pytest.raises(ValueError, match="no training features"):
        fit_probe(nn.Linear(4, 2), torch.empty(0, 4), torch.empty(0, dtype=torch.long))
