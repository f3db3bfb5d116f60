"""Predicting steps, time and cost per strategy before any GPU is used (``kadapt plan``, ``auto``).

Pure Python (no torch), so the CLI can plan from a manifest and ``auto`` can plan inside the
trainer with the same arithmetic. The model is the standard transformer cost count (Kaplan et
al., 2020): a forward pass costs about ``2 N`` FLOPs per token for ``N`` non-embedding
parameters, a backward pass ``2 N`` for the activation gradients down to the lowest trainable
layer plus ``2 N`` for the weight gradients of what trains. Per strategy, per token:

- ``full``: ``6 N``;
- ``partial`` (top ``k`` of ``L`` blocks): ``2 N + 4 N k / L``;
- ``lora``: ``4 N`` (activation gradients through every block, adapter weights negligible);
- ``head-only`` on cached features: one forward pass over the data, ``2 N``, then an L-BFGS
  solve whose cost is negligible; LP-FT adds that same probe before partial, full and LoRA.

Time comes from one of two models, and the estimate says which (``Hardware.source``):

- **Measured steps** (``kadapt plan --local`` and ``auto`` on this machine): a short calibration
  (``kadapt_trainer.calibrate``) runs the job's own model on micro-batches of its own data and
  times, per strategy, a training micro-batch (forward and backward of what trains), an
  optimizer step, a no-grad evaluation micro-batch and a checkpoint write; ``kadapt plan``
  runs it in a fresh trainer process and also times that process's start-up (imports, data,
  model), all in CPU seconds of the process, which other load on a shared machine does not
  inflate the way it inflates wall time. The run's time is then counted, not modelled:
  start-up + micro-batches x their time + optimizer steps + evaluations (one per epoch, the
  final one and the test split) + checkpoints (one per evaluation, and the final save). FLOPs are still reported. On CPU
  this matters: a training step of all-MiniLM-L6-v2 runs at well under half the FLOP rate
  of its forward pass (the dense embedding gradient, AdamW over every weight), which the
  FLOP count alone cannot know. The figure is the run's CPU seconds: its wall time with one
  thread per process on an otherwise idle machine (more threads: an upper bound).
- **FLOPs over a throughput** (a cluster plan, or where the calibration cannot run): a fixed
  start-up plus FLOPs over an effective throughput taken from a GPU table (peak x
  ``GPU_EFFICIENCY``), or measured on this CPU (a float32 matrix product x ``CPU_EFFICIENCY``).

Early stopping can only end a run sooner, so the projection is an upper bound of the planned
epochs.
"""

from __future__ import annotations

import csv
import json
import math
import struct
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kadapt_trainer.config import StrategyType, Task, TrainerConfig, TrainingSpec, resolve_uri
from kadapt_trainer.defaults import resolve_training

#: Peak dense throughput per GPU in FLOP/s (bf16/fp16 tensor cores; fp32 runs at TF32 rates).
GPU_PEAK_FLOPS: dict[str, float] = {
    "nvidia-h200": 989e12,
    "nvidia-h100": 989e12,
    "nvidia-a100": 312e12,
    "nvidia-a10g": 125e12,
    "nvidia-a10": 125e12,
    "nvidia-l4": 121e12,
    "nvidia-l40s": 362e12,
    "nvidia-v100": 125e12,
    "nvidia-t4": 65e12,
}
#: Default GPU peak when the type is unknown (an A100's).
DEFAULT_GPU_PEAK = 312e12
#: Share of peak that fine-tuning of small and mid-size models reaches on GPUs.
GPU_EFFICIENCY = 0.3
#: Share of a plain matrix product's rate that a training step reaches on CPU (small
#: matrices, attention, optimizer, framework overhead): calibrated on this project's tiny
#: jobs and all-MiniLM-L6-v2 on 2 cores.
CPU_EFFICIENCY = 0.5
#: Share of a no-grad forward pass's FLOP rate that a CPU training step reaches: measured on
#: all-MiniLM-L6-v2 (2 cores, micro-batch 8 x 32 tokens: forward 0.05 s, forward + backward +
#: AdamW 0.33 s, i.e. 6.6x the time for 3x the FLOPs). ``auto`` applies it to its probe's rate.
TRAINING_VS_FORWARD = 0.45
#: Seconds of one process before the first step and after the last: start, imports, model
#: load, tokenising, engine set-up, saving (measured on 2 shared cores: 8-10 s for tiny jobs).
STARTUP_SECONDS_ENGINE = 9.0
STARTUP_SECONDS_CACHED = 8.0
#: Framework time per micro-batch that FLOPs do not show (launch, optimizer, bookkeeping).
MICRO_BATCH_OVERHEAD_SECONDS = {"cpu": 0.02, "gpu": 0.01}
#: Per evaluation: the evaluation's framework time plus the checkpoint written after it.
EVALUATION_OVERHEAD_SECONDS = 0.3
#: FLOPs per token as multiples of N (see the module docstring).
FORWARD = 2.0
STRATEGIES = (StrategyType.HEAD_ONLY, StrategyType.LORA, StrategyType.PARTIAL, StrategyType.FULL)


@dataclass(frozen=True)
class Workload:
    """What the job computes on: model shape and data size."""

    total_params: int
    embedding_params: int
    layers: int
    train_examples: int
    validation_examples: int
    tokens_per_example: float
    test_examples: int = 0

    @property
    def compute_params(self) -> int:
        """Non-embedding parameters: what costs FLOPs (embeddings are lookups)."""
        return max(1, self.total_params - self.embedding_params)


@dataclass(frozen=True)
class StepTimes:
    """CPU seconds measured on this machine with the job's own model and data (a calibration).

    Per strategy (``full``, ``partial``, ``lora``): ``train`` is one training micro-batch
    (forward and backward), ``optimizer`` one optimizer step over what trains, ``checkpoint``
    one checkpoint write (trainable weights and optimizer state). ``forward`` is one no-grad
    micro-batch (evaluation), ``features`` the per-example time of the cached-feature pass
    (head-only's and the probe's: length-sorted, larger no-grad batches; 0 where not measured:
    ``forward`` is used), ``save`` the final model's write,
    ``startup`` a trainer process's time before its first step (0 where not measured) and
    ``imports`` the part of it spent importing torch, transformers and DeepSpeed (what a
    process that already ran a job does not pay again).
    """

    micro_batch_size: int
    train: dict[str, float]
    optimizer: dict[str, float]
    checkpoint: dict[str, float]
    forward: float
    save: float = 0.0
    startup: float = 0.0
    imports: float = 0.0
    features: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StepTimes:
        """Inverse of :meth:`as_dict` (the calibration process's output)."""
        return cls(
            micro_batch_size=int(raw["micro_batch_size"]),
            train={str(k): float(v) for k, v in raw["train"].items()},
            optimizer={str(k): float(v) for k, v in raw["optimizer"].items()},
            checkpoint={str(k): float(v) for k, v in raw["checkpoint"].items()},
            forward=float(raw["forward"]),
            save=float(raw.get("save", 0.0)),
            startup=float(raw.get("startup", 0.0)),
            imports=float(raw.get("imports", 0.0)),
            features=float(raw.get("features", 0.0)),
        )


@dataclass(frozen=True)
class Hardware:
    """Where it runs and what a second of it costs."""

    processes: int
    gpus_per_process: int
    flops_per_second: float
    price_per_gpu_hour: float
    currency: str = "USD"
    source: str = "assumed"
    #: Measured step times of this job on this machine; where present they replace the FLOP model.
    step_times: StepTimes | None = None
    #: Share of ``flops_per_second`` that training FLOPs reach: 1 where the rate already is a
    #: training rate (the GPU table, the CPU matmul x ``CPU_EFFICIENCY``); ``TRAINING_VS_FORWARD``
    #: where it was measured on a forward pass (``auto``'s probe).
    training_rate_share: float = 1.0

    @property
    def gpu_equivalents(self) -> int:
        """GPUs billed; a CPU process counts as one GPU-equivalent (as ``kadapt run`` bills)."""
        return self.processes * max(1, self.gpus_per_process)


@dataclass(frozen=True)
class Estimate:
    """One strategy's projection."""

    strategy: str
    trainable_params: int
    epochs: int
    steps: int
    flops: float
    seconds: float
    gpu_seconds: float
    cost: float
    fits_budget: bool
    budget_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def flops_per_token(strategy: StrategyType | str, n: int, trainable_layers: int, layers: int) -> float:
    """Training FLOPs per token (per pass) of one strategy."""
    strategy = StrategyType(strategy)
    if strategy == StrategyType.FULL:
        return 6.0 * n
    if strategy == StrategyType.LORA:
        return 4.0 * n
    if strategy == StrategyType.PARTIAL:
        share = min(1.0, trainable_layers / max(1, layers))
        return FORWARD * n + 4.0 * n * share
    return FORWARD * n


def trainable_estimate(
    strategy: StrategyType | str, w: Workload, num_labels: int, hidden: int, lora_rank: int, trainable_layers: int
) -> int:
    """Parameters a strategy trains, approximately (status reports the exact count)."""
    strategy = StrategyType(strategy)
    head = hidden * num_labels + num_labels
    if strategy == StrategyType.FULL:
        return w.total_params
    if strategy == StrategyType.PARTIAL:
        return head + int(w.compute_params * trainable_layers / max(1, w.layers))
    if strategy == StrategyType.LORA:
        return head + w.layers * 3 * 2 * hidden * lora_rank  # q, k, v: A (r x h) and B (h x r)
    return head


def estimate(
    strategy: StrategyType | str,
    w: Workload,
    hw: Hardware,
    training: TrainingSpec,
    task: Task | str,
    *,
    trainable_layers: int = 1,
    num_labels: int = 2,
    hidden: int = 768,
    lora_rank: int = 8,
    max_cost: float | None = None,
    max_gpu_hours: float | None = None,
) -> Estimate:
    """Steps, seconds, GPU-seconds and cost of one strategy with its resolved training settings."""
    strategy = StrategyType(strategy)
    resolved, _ = resolve_training(training, strategy, task)
    epochs = int(resolved.epochs or 1)
    per_epoch = max(1, math.ceil(w.train_examples / resolved.global_batch_size))
    n = w.compute_params
    tokens_train = w.train_examples * w.tokens_per_example
    tokens_eval = (w.validation_examples + w.test_examples) * w.tokens_per_example
    cached = strategy == StrategyType.HEAD_ONLY and Task(task) == Task.SEQUENCE_CLASSIFICATION
    if cached:
        steps = 1
        flops = FORWARD * n * (tokens_train + tokens_eval)
        startup = STARTUP_SECONDS_CACHED
    else:
        steps = resolved.max_steps or epochs * per_epoch
        passes = steps / per_epoch
        train_flops = flops_per_token(strategy, n, trainable_layers, w.layers) * tokens_train * passes
        flops = train_flops + FORWARD * n * tokens_eval * math.ceil(passes)  # one evaluation per epoch
        if resolved.lp_ft and Task(task) == Task.SEQUENCE_CLASSIFICATION:
            flops += FORWARD * n * (tokens_train + w.validation_examples * w.tokens_per_example)  # LP-FT probe
        micro_batches = steps * resolved.global_batch_size / (resolved.micro_batch_size * hw.processes)
        overhead = MICRO_BATCH_OVERHEAD_SECONDS["gpu" if hw.gpus_per_process else "cpu"] * micro_batches
        startup = STARTUP_SECONDS_ENGINE + overhead + EVALUATION_OVERHEAD_SECONDS * math.ceil(passes)
        epochs = math.ceil(passes)
    seconds = startup + flops / (hw.flops_per_second * hw.processes)
    if not cached and hw.training_rate_share < 1.0:  # training FLOPs run slower than the measured rate
        seconds += train_flops * (1.0 / hw.training_rate_share - 1.0) / (hw.flops_per_second * hw.processes)
    measured = hw.step_times
    if measured is not None and (cached or str(strategy) in measured.train):
        seconds = measured_seconds(strategy, w, hw.processes, measured, resolved, task, steps, per_epoch)
    gpu_seconds = seconds * hw.gpu_equivalents
    cost = gpu_seconds / 3600.0 * hw.price_per_gpu_hour
    fits, reason = True, None
    if max_cost is not None and cost > max_cost:
        fits, reason = False, f"projected cost {cost:.4g} {hw.currency} > budget.maxCost {max_cost:g}"
    elif max_gpu_hours is not None and gpu_seconds / 3600.0 > max_gpu_hours:
        fits, reason = False, f"projected {gpu_seconds / 3600.0:.4g} GPU-hours > budget.maxGPUHours {max_gpu_hours:g}"
    trainable = trainable_estimate(strategy, w, num_labels, hidden, lora_rank, trainable_layers)
    return Estimate(str(strategy), trainable, epochs, steps, flops, seconds, gpu_seconds, cost, fits, reason)


#: Start-up that a calibration does not see: process group and DeepSpeed engine set-up.
ENGINE_INIT_SECONDS = 1.5


def measured_seconds(
    strategy: StrategyType,
    w: Workload,
    processes: int,
    t: StepTimes,
    training: TrainingSpec,
    task: Task | str,
    steps: int,
    per_epoch: int,
) -> float:
    """A run's seconds counted from measured step times (see the module docstring).

    Every micro-batch, optimizer step, evaluation and checkpoint the trainer will run is
    counted at its measured time; each process takes its share of the examples.
    """
    procs = max(1, processes)

    def forward_passes(examples: int) -> float:
        return math.ceil(examples / procs / t.micro_batch_size) * t.forward

    def feature_pass(examples: int) -> float:  # the cached-feature pass: head-only and the probe
        return examples / procs * t.features if t.features else forward_passes(examples)

    startup = t.startup or STARTUP_SECONDS_CACHED
    evaluation = forward_passes(w.validation_examples)
    test = forward_passes(w.test_examples)
    probe = feature_pass(w.train_examples + w.validation_examples)
    if strategy == StrategyType.HEAD_ONLY and Task(task) == Task.SEQUENCE_CLASSIFICATION:
        # one feature pass over train + validation, the test split, the head
        return startup + probe + feature_pass(w.test_examples) + t.save
    startup += ENGINE_INIT_SECONDS
    name = str(strategy)
    micro = math.ceil(training.global_batch_size / procs / training.micro_batch_size)
    scale = training.micro_batch_size / t.micro_batch_size  # step time grows with the micro-batch
    train = steps * (micro * t.train[name] * scale + t.optimizer[name])
    evaluations = math.ceil(steps / per_epoch)
    if training.eval_every_steps:
        evaluations = max(evaluations, steps // training.eval_every_steps)
    seconds = startup + train + (evaluations + 1) * evaluation + test
    seconds += evaluations * t.checkpoint[name] + t.save
    if training.lp_ft and Task(task) == Task.SEQUENCE_CLASSIFICATION:
        seconds += probe
    return seconds


def candidate_layers(cfg: TrainerConfig, layers: int) -> int:
    """Blocks that ``partial`` trains in a plan: the configured count, else the top third."""
    partial = cfg.strategy.partial
    return partial.trainable_layers if partial and partial.trainable_layers else max(1, layers // 3)


def plan_strategies(cfg: TrainerConfig, w: Workload, hw: Hardware, *, hidden: int, num_labels: int) -> list[Estimate]:
    """Every concrete strategy of this job (classification) or those that suit causal-lm."""
    strategies = list(STRATEGIES)
    lora_rank = cfg.strategy.lora.rank if cfg.strategy.lora else 8
    layers = candidate_layers(cfg, w.layers)
    return [
        estimate(
            s,
            w,
            hw,
            cfg.training,
            cfg.task,
            trainable_layers=layers,
            num_labels=num_labels,
            hidden=hidden,
            lora_rank=lora_rank,
            max_cost=cfg.budget.max_cost,
            max_gpu_hours=cfg.budget.max_gpu_hours,
        )
        for s in strategies
    ]


# --- reading a job's model and data without torch (kadapt plan) -------------------------------


def measure_cpu_flops(seconds: float = 0.3, size: int = 384, rounds: int = 3) -> float:
    """Float32 matrix-product rate of one process on this machine, in FLOP/s.

    torch's when it is installed (the library the trainer computes with, and its threads),
    else numpy's. The best of a few short rounds: the first call pays for start-up, and other
    load on a shared machine only ever slows a round down.
    """
    try:
        import torch

        a: Any = torch.randn(size, size)
    except ImportError:
        import numpy as np

        a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = a * 1.0
    best = 0.0
    for _ in range(rounds):
        runs = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds / rounds or runs == 0:
            a @ b
            runs += 1
        best = max(best, 2.0 * size**3 * runs / (time.perf_counter() - start))
    return best


def hardware_for(
    cfg: TrainerConfig, processes: int, gpus_per_process: int, gpu_type: str | None, local: bool = False
) -> Hardware:
    """Throughput from the GPU table, or measured on this CPU (``local``: as ``kadapt run`` runs it here)."""
    if gpus_per_process > 0 and not local:
        peak = GPU_PEAK_FLOPS.get(gpu_type or "", DEFAULT_GPU_PEAK)
        return Hardware(
            processes,
            gpus_per_process,
            peak * GPU_EFFICIENCY * gpus_per_process,
            cfg.price_per_gpu_hour,
            cfg.currency,
            f"{gpu_type or 'unknown GPU'}: {peak / 1e12:g} TFLOP/s peak x {GPU_EFFICIENCY:g}",
        )
    rate = measure_cpu_flops() * CPU_EFFICIENCY
    return Hardware(
        processes,
        gpus_per_process,
        rate,
        cfg.price_per_gpu_hour,
        cfg.currency,
        f"this CPU: {rate / 1e9:.1f} GFLOP/s effective per process (measured matmul x {CPU_EFFICIENCY:g})",
    )


def with_step_times(hw: Hardware, steps: StepTimes) -> Hardware:
    """``hw`` whose estimates count the measured step times instead of FLOPs."""
    source = (
        f"measured on this machine (CPU seconds of one process: idle wall time at one thread): start-up "
        f"{steps.startup:.1f}s, full micro-batch {steps.train.get('full', 0.0):.3f}s, evaluation micro-batch "
        f"{steps.forward:.3f}s (x{steps.micro_batch_size})"
    )
    return replace(hw, step_times=steps, source=source)


def with_source(hw: Hardware, source: str) -> Hardware:
    """``hw`` with another description of where its figures come from."""
    return replace(hw, source=source)


def safetensors_params(folder: Path) -> int | None:
    """Parameter count from the safetensors headers (no weights read), if the model has them."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with f.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta["shape"])
    return total


def model_shape(folder: Path) -> dict[str, int]:
    """Hidden size, blocks, vocabulary and parameter count of a Hugging Face model folder."""
    conf = json.loads((folder / "config.json").read_text())
    hidden = int(conf.get("hidden_size") or conf.get("n_embd") or conf.get("d_model") or 768)
    layers = int(conf.get("num_hidden_layers") or conf.get("n_layer") or conf.get("num_layers") or 12)
    vocab = int(conf.get("vocab_size") or 30000)
    params = safetensors_params(folder)
    if params is None:  # the usual count: 12 h^2 per block plus embeddings
        params = 12 * layers * hidden * hidden + vocab * hidden
    return {"hidden": hidden, "layers": layers, "vocab": vocab, "params": params}


def read_texts(path: Path, text_field: str, label_field: str | None) -> tuple[list[str], set[str]]:
    """Texts (and the set of labels) of a jsonl/csv/parquet file."""
    texts: list[str] = []
    labels: set[str] = set()
    suffix = path.suffix.lower()
    rows: Any
    if suffix in (".jsonl", ".json"):
        rows = (json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip())
    elif suffix == ".csv":
        rows = csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines())
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    for row in rows:
        text = row.get(text_field)
        if isinstance(text, str) and text.strip():
            texts.append(text)
            if label_field and row.get(label_field) is not None:
                labels.add(str(row[label_field]))
    return texts, labels


def mean_tokens(model_folder: Path, texts: list[str], max_length: int, sample: int = 2000) -> float:
    """Mean tokens per example after truncation (the model's tokenizer; 4 characters a token without one)."""
    part = texts[:sample]
    if not part:
        return 1.0
    tok_file = model_folder / "tokenizer.json"
    if tok_file.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tok_file))
        tok.no_padding()
        tok.no_truncation()
        lengths = [len(e.ids) for e in tok.encode_batch(part)]
    else:
        lengths = [max(1, len(t) // 4) + 2 for t in part]
    return sum(min(n, max_length) for n in lengths) / len(lengths)


def workload_for(cfg: TrainerConfig) -> tuple[Workload, dict[str, int], int]:
    """(workload, model shape, classes) of a job, from its files."""
    model_folder = resolve_uri(cfg.model.uri)
    shape = model_shape(model_folder)
    ds = cfg.dataset
    label = ds.label_field if cfg.task == Task.SEQUENCE_CLASSIFICATION else None
    texts, labels = read_texts(resolve_uri(ds.uri), ds.text_field, label)
    n_val = 0
    if ds.validation_uri:
        n_val = len(read_texts(resolve_uri(ds.validation_uri), ds.text_field, None)[0])
        n_train = len(texts)
    else:
        n_val = int(len(texts) * ds.validation_split)
        n_train = len(texts) - n_val
    test_uri = getattr(ds, "test_uri", None)
    n_test = len(read_texts(resolve_uri(test_uri), ds.text_field, None)[0]) if test_uri else 0
    w = Workload(
        total_params=shape["params"],
        embedding_params=shape["vocab"] * shape["hidden"],
        layers=shape["layers"],
        train_examples=n_train,
        validation_examples=n_val,
        tokens_per_example=mean_tokens(model_folder, texts, ds.max_length),
        test_examples=n_test,
    )
    return w, shape, max(2, len(labels))
