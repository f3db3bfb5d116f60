"""Measured step times of a job on this machine: the planner's calibration.

A FLOP count predicts GPU runs well but CPU runs badly: on two cores a training step of
all-MiniLM-L6-v2 reaches well under half the FLOP rate of its forward pass (a dense gradient
for the 12M-parameter embedding, AdamW over every weight, the framework's overhead). So where
the job will run here, the planner measures instead of modelling: this module runs the job's
own model on a few micro-batches of its own data and times, per strategy, what the trainer
will repeat (``planning.StepTimes``). ``planning.measured_seconds`` then counts them.

Two callers:

- ``kadapt plan --local`` runs ``python -m kadapt_trainer.calibrate CONFIG OUT`` in a fresh
  process (the operator side imports no torch), which also times that process's start-up
  (imports, data, tokenizer, model): the same work a trainer process does before its first step;
- ``auto`` (``quality.choose``) calls :func:`measure` in the trainer process before it
  projects its candidates' costs.

Each strategy is applied to a deep copy of the model, so the model itself is untouched.
Times are means over a few micro-batches after a warm-up one, in **CPU seconds of this process**
(``time.process_time``, every thread), not wall seconds: on a shared machine the wall time of
a few micro-batches swings with whatever else runs (3-7x on this project's two shared cores),
the CPU time the job needs does not. With one thread per process (``OMP_NUM_THREADS=1``, as
the trainer's tests and the benchmarks run) CPU seconds are the wall seconds of the run on an
otherwise idle machine; with more threads they overstate it by up to the thread count.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kadapt_trainer.config import StrategySpec, StrategyType, Task, TrainerConfig
from kadapt_trainer.data import Encoded, collate
from kadapt_trainer.losses import summed_loss
from kadapt_trainer.planning import StepTimes

#: Distinct micro-batches sampled (lengths vary, so does padding); each measurement times at
#: least ``MIN_ROUNDS`` of them after a warm-up and goes on, cycling, for ``MIN_SECONDS``
#: (tiny models: enough calls for a stable mean on a shared machine), at most ``MAX_ROUNDS``.
BATCHES = 4
MIN_ROUNDS = 3
MIN_SECONDS = 0.5
MAX_ROUNDS = 50
#: Batches of the cached-feature pass timed (a random sample of the training split, sorted as the pass sorts).
FEATURE_SAMPLE_BATCHES = 3
#: Models above this many parameters are not copied for a calibration (memory): FLOP model instead.
MAX_COPY_PARAMS = 1_000_000_000


def strategy_specs(cfg: TrainerConfig, layers: int) -> dict[str, StrategySpec]:
    """The strategies a plan prices, as the trainer would apply them (partial: ``candidate_layers``)."""
    from kadapt_trainer.config import LoraSpec, PartialSpec
    from kadapt_trainer.planning import candidate_layers

    partial = cfg.strategy.partial
    if partial is None or (partial.trainable_layers is None and not partial.modules):
        partial = PartialSpec(trainable_layers=candidate_layers(cfg, layers))
    return {
        str(StrategyType.FULL): StrategySpec(type=StrategyType.FULL),
        str(StrategyType.PARTIAL): StrategySpec(type=StrategyType.PARTIAL, partial=partial),
        str(StrategyType.LORA): StrategySpec(type=StrategyType.LORA, lora=cfg.strategy.lora or LoraSpec()),
    }


def sample_batches(encoded: Encoded, micro: int, pad_id: int, task: Task, count: int, seed: int = 0) -> list[Any]:
    """``count`` micro-batches of random examples, padded as the trainer pads them."""
    rng = random.Random(seed)
    n = len(encoded)
    return [collate(encoded, [rng.randrange(n) for _ in range(micro)], pad_id, task) for _ in range(count)]


def _mean_seconds(fn: Any, batches: list[Any]) -> float:
    """Mean CPU seconds of ``fn`` per batch after a warm-up call (see ``MIN_SECONDS``)."""
    fn(batches[0])  # warm-up: allocations, lazy initialisation
    rounds, start = 0, time.process_time()
    while rounds < MIN_ROUNDS or (time.process_time() - start < MIN_SECONDS and rounds < MAX_ROUNDS):
        fn(batches[1 + rounds % (len(batches) - 1)])
        rounds += 1
    return (time.process_time() - start) / rounds


def _timed(fn: Any) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(
    model: nn.Module,
    encoded: Encoded,
    cfg: TrainerConfig,
    pad_id: int,
    device: torch.device,
    layers: int,
    startup: float = 0.0,
) -> StepTimes:
    """Time the job's micro-batches per strategy on copies of ``model``.

    Args:
        model: the loaded model with its new head (not modified).
        encoded: the training split, tokenised as the trainer does.
        cfg: the job (micro-batch size, task, the strategies' settings).
        pad_id: the tokenizer's padding id.
        device: where the run computes.
        layers: the model's blocks (for partial's default share).
        startup: seconds a trainer process spends before its first step, where measured.
    """
    from kadapt_trainer.strategies import apply_strategy

    task, micro = cfg.task, cfg.training.micro_batch_size
    batches = [
        {k: v.to(device) for k, v in b.items()}
        for b in sample_batches(encoded, micro, pad_id, task, BATCHES, cfg.training.seed)
    ]
    train: dict[str, float] = {}
    optimizer: dict[str, float] = {}
    checkpoint: dict[str, float] = {}
    model.eval()
    with torch.no_grad():
        forward = _mean_seconds(lambda b: model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]), batches)
    features = _feature_seconds(model, encoded, cfg, pad_id, device)
    with tempfile.TemporaryDirectory(prefix="kadapt-calibrate-") as tmp:
        save = _timed(lambda: torch.save(model.state_dict(), Path(tmp) / "model.pt"))
        for name, spec in strategy_specs(cfg, layers).items():
            copied, _ = apply_strategy(copy.deepcopy(model), spec, task)
            copied.to(device).train()
            params = [p for p in copied.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-12)  # the step's cost, not its effect

            def step(batch: dict[str, torch.Tensor], m: nn.Module = copied) -> None:
                logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                summed_loss(logits, batch["labels"], task).backward()

            train[name] = _mean_seconds(step, batches)
            optimizer[name] = _mean_seconds(lambda _, o=opt: o.step(), batches)  # warm-up: AdamW allocates state
            trainable = {k: v for k, v in copied.state_dict().items() if k in dict(copied.named_parameters())}
            state = {"model": trainable, "optimizer": opt.state_dict()}
            checkpoint[name] = _timed(lambda s=state: torch.save(s, Path(tmp) / "checkpoint.pt"))
            del copied, opt, params
    return StepTimes(micro, train, optimizer, checkpoint, forward, save, startup, features=features)


def _feature_seconds(
    model: nn.Module, encoded: Encoded, cfg: TrainerConfig, pad_id: int, device: torch.device
) -> float:
    """CPU seconds per example of ``features.extract_features`` on a sample (0: not a classifier).

    Head-only and the probe run this pass, not evaluation micro-batches: length-sorted
    batches of ``EXTRACT_BATCH``, so less padding and a lower cost per example.
    """
    if cfg.task != Task.SEQUENCE_CLASSIFICATION or not len(encoded):
        return 0.0
    from kadapt_trainer.dist import DistInfo
    from kadapt_trainer.features import EXTRACT_BATCH, extract_features
    from kadapt_trainer.strategies import find_head

    try:
        _, head = find_head(model, cfg.task)
    except Exception:  # no recognisable head: the evaluation forward prices the pass
        return 0.0
    rng = random.Random(cfg.training.seed)
    picked = [rng.randrange(len(encoded)) for _ in range(FEATURE_SAMPLE_BATCHES * EXTRACT_BATCH)]
    sample = Encoded([encoded.input_ids[i] for i in picked], [0] * len(picked))  # labels: unused by the pass
    single = DistInfo(rank=0, world_size=1, local_rank=0)
    warm_up = Encoded(sample.input_ids[:EXTRACT_BATCH], [0] * EXTRACT_BATCH)
    extract_features(model, head, warm_up, pad_id, single, device)
    seconds = _timed(lambda: extract_features(model, head, sample, pad_id, single, device))
    return seconds / len(sample)


def import_architecture(path: Path) -> None:
    """Import the modelling module that loading this model imports on first use.

    transformers imports each architecture's modelling (and tokenizer) modules lazily, on the
    first load (about 2.9 s of all-MiniLM-L6-v2's 3.4 s first load on this project's VM).
    That is import time, paid once per process: a process that already ran a job (the
    quality benchmark's warm process) loads the model in the remaining 0.4-0.6 s. Counting
    it under ``imports`` rather than ``startup`` keeps the two apart. (``calibrate_job``
    loads the tokenizer before its ``imports`` stamp for the same reason.)
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    with contextlib.suppress(Exception):  # an unknown architecture: the load below reports it
        MODEL_MAPPING[type(AutoConfig.from_pretrained(str(path)))]


def calibrate_job(cfg: TrainerConfig) -> StepTimes:
    """Load the job as a trainer process would, then :func:`measure` (for ``kadapt plan --local``)."""
    import deepspeed  # noqa: F401  # imported by every trainer process: part of its start-up
    import transformers  # noqa: F401

    from kadapt_trainer.data import encode, load_text_data
    from kadapt_trainer.modeling import load_model, load_tokenizer, resolve_model_path
    from kadapt_trainer.strategies import find_blocks

    path = resolve_model_path(cfg.model)
    import_architecture(path)
    tokenizer = load_tokenizer(path)  # its lazy module imports count as imports (its own load is ~0.1 s)
    imports = time.process_time()  # CPU seconds since this process started: the imports

    data = load_text_data(cfg)
    torch.manual_seed(cfg.training.seed)
    model = load_model(path, cfg.task, data.label_names, tokenizer)
    train = encode(data.train, tokenizer, data, cfg.dataset.max_length, cfg.task)
    if cfg.task == Task.SEQUENCE_CLASSIFICATION and data.validation is not None:
        encode(data.validation, tokenizer, data, cfg.dataset.max_length, cfg.task)  # as the trainer does
    startup = time.process_time()  # ... and data, tokenizer, model
    try:
        layers = len(find_blocks(model)[1])
    except Exception:  # no recognisable blocks: partial prices one
        layers = 1
    times = measure(model, train, cfg, int(tokenizer.pad_token_id), torch.device("cpu"), layers, startup)
    return replace(times, imports=imports)


def main(argv: list[str] | None = None) -> int:
    """``python -m kadapt_trainer.calibrate CONFIG.json OUT.json``: write the step times as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m kadapt_trainer.calibrate CONFIG.json OUT.json", file=sys.stderr)
        return 2
    cfg = TrainerConfig.model_validate_json(Path(args[0]).read_text())
    times = calibrate_job(cfg)
    Path(args[1]).write_text(json.dumps(times.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
