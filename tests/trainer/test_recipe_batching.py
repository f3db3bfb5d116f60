"""One optimizer step does not depend on how its global batch is split (issue 12, item 1).

Every target (an example in classification, a predicted token in causal-lm) must weigh the
same in the step's loss and gradient, whatever the micro-batch size and the world size. The
same two steps run as 1 rank x micro-batch 8, 1 rank x 1 (8 accumulation steps), 2 ranks x 4
and 2 ranks x 1 (4 accumulation steps), under ZeRO 0 and 2; the losses of both steps and the
weights after them must agree to float tolerance. The causal-lm examples have different
lengths, so averaging per micro-batch (the bug) gives a different loss and gradient.
Dropout is off so that a forward pass does not depend on the random state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer import tiny
from tests.trainer.driver import max_weight_diff, output_weights, run_cases

pytestmark = pytest.mark.slow

CLS, LM = "sequence-classification", "causal-lm"
TASKS = {CLS: "bert", LM: "gpt2"}
ZERO_STAGES = (0, 2)
#: (world size, micro-batch size) with a global batch of 8; the first is the reference.
SPLITS = ((1, 8), (1, 1), (2, 4), (2, 1))
GLOBAL_BATCH = 8
STEPS = 2
#: fp32 sums in a different order: agreement to this is equality.
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5
#: BERT's attention key bias adds q.b to every score of a query, which softmax cancels: its
#: gradient is zero up to rounding, and Adam's normalised update turns rounding into moves of
#: up to the learning rate. Its value says nothing about the objective, so it is not compared.
ZERO_GRADIENT = ("attention.self.key.bias",)


def _compared(weights: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in weights.items() if not k.endswith(ZERO_GRADIENT)}


def _name(task: str, zero: int, world: int, micro: int) -> str:
    return f"{'cls' if task == CLS else 'lm'}-z{zero}-w{world}-m{micro}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, tiny_data: dict[str, Path]) -> dict[str, Any]:
    """Both matrices: one process for world size 1, one 2-process gang for world size 2."""
    tmp = tmp_path_factory.mktemp("batching")
    models = {arch: tiny.make_model(tmp / "models" / arch, arch, dropout=0.0) for arch in TASKS.values()}
    out: dict[str, Any] = {}
    for world in (1, 2):
        cases = []
        for task, arch in TASKS.items():
            kind = "cls" if task == CLS else "lm"
            for zero in ZERO_STAGES:
                for w, micro in SPLITS:
                    if w != world:
                        continue
                    name = _name(task, zero, w, micro)
                    config = {
                        "model": {"uri": str(models[arch])},
                        "task": task,
                        "dataset": {"uri": str(tiny_data[f"{kind}-train"]), "validationSplit": 0.0, "maxLength": 32},
                        "strategy": {"type": "full"},
                        "training": {
                            "maxSteps": STEPS,
                            "globalBatchSize": GLOBAL_BATCH,
                            "microBatchSize": micro,
                            "learningRate": 1e-3,
                            "warmupRatio": 0.0,
                            "earlyStopping": {"enabled": False},
                            "lpFt": False,  # a random head: the step itself is under test
                        },
                        "deepspeed": {"zeroStage": zero},
                        "output": {"uri": str(tmp / name)},
                    }
                    cases.append({"name": name, "config": config})
        if world == 2:  # the default LP-FT start fits its probe on every rank's features: a gang must run it
            lpft = json.loads(json.dumps(cases[0]))
            lpft["name"], lpft["config"]["output"]["uri"] = "cls-lpft-w2", str(tmp / "cls-lpft-w2")
            del lpft["config"]["training"]["lpFt"]
            cases.append(lpft)
        world_tmp = tmp / f"world{world}"
        world_tmp.mkdir()
        out.update(run_cases(world_tmp, cases, world=world))
    for name in out:
        out[name]["weights"] = output_weights(tmp / name)
    return out


def test_a_gang_fits_the_lp_ft_probe(results: dict[str, Any]) -> None:
    """LP-FT (on by default) starts from a probe fitted on every rank's features."""
    assert results["cls-lpft-w2"]["report"]["state"] == "succeeded"
    assert results["cls-lpft-w2"]["report"]["world_size"] == 2


@pytest.mark.parametrize("zero", ZERO_STAGES)
@pytest.mark.parametrize("task", [CLS, LM])
def test_step_is_independent_of_micro_batch_and_world_size(task: str, zero: int, results: dict[str, Any]) -> None:
    reference = results[_name(task, zero, *SPLITS[0])]
    assert len(reference["losses"]) == STEPS
    for world, micro in SPLITS[1:]:
        other = results[_name(task, zero, world, micro)]
        label = f"{world} rank(s) x micro-batch {micro} vs 1 x {GLOBAL_BATCH}"
        assert other["losses"] == pytest.approx(reference["losses"], rel=LOSS_RTOL), label
        worst, diff = max_weight_diff(_compared(reference["weights"]), _compared(other["weights"]))
        assert diff <= WEIGHT_ATOL, f"{label}: {worst} differs by {diff:.3g}"
