"""Unknown GPU types: metric labels stay within the price table, and the message says what to do."""

from __future__ import annotations

import pytest

from kadapt_operator.cost import (
    CONDITION_GPU_TYPE_KNOWN,
    OTHER_GPU_TYPE,
    REASON_UNKNOWN_GPU_TYPE,
    gpu_type_label,
    is_priced,
    price_for,
    unknown_gpu_type_message,
)
from kadapt_operator.settings import OperatorSettings
from tests.harness import checks
from tests.harness.emulator import AJOBS, Cluster, OperatorHandle, job_manifest

SETTINGS = OperatorSettings(gpu_prices={"default": 2.5, "nvidia-a100": 3.9, "nvidia-h100": 4.5})


@pytest.mark.parametrize(
    ("gpu_type", "label", "priced"),
    [
        ("nvidia-a100", "nvidia-a100", True),
        ("default", "default", True),
        ("nvidia-a10O", OTHER_GPU_TYPE, False),
        ("team-x-made-this-up-1234", OTHER_GPU_TYPE, False),
    ],
)
def test_metric_label_takes_only_price_table_keys(gpu_type: str, label: str, priced: bool) -> None:
    assert gpu_type_label(SETTINGS, gpu_type) == label
    assert gpu_type_label(SETTINGS.gpu_prices, gpu_type) == label
    assert is_priced(SETTINGS, gpu_type) is priced


def test_free_form_types_give_a_bounded_label_set() -> None:
    labels = {gpu_type_label(SETTINGS, f"made-up-{i}") for i in range(100)}
    assert labels == {OTHER_GPU_TYPE}
    assert {gpu_type_label(SETTINGS, t) for t in SETTINGS.gpu_prices} | labels <= {*SETTINGS.gpu_prices, "other"}


def test_unknown_type_message_names_the_field_the_price_and_the_fix() -> None:
    msg = unknown_gpu_type_message(SETTINGS, "nvidia-a10O")
    assert "spec.resources.gpuType 'nvidia-a10O'" in msg
    assert "known: nvidia-a100, nvidia-h100" in msg
    assert "default 2.5" in msg and f"{price_for(SETTINGS, 'nvidia-a10O'):g}" == "2.5"
    assert "gpuPrices.nvidia-a10O" in msg


def test_an_unknown_gpu_type_gets_a_condition_and_a_warning_event(cluster: Cluster, operator: OperatorHandle) -> None:
    cluster.create(AJOBS, job_manifest("typo-gpu", "team-a", resources={"workers": 1, "gpuType": "nvidia-a10O"}))
    cond = cluster.wait_for(lambda: checks.condition(cluster, "typo-gpu", "team-a", CONDITION_GPU_TYPE_KNOWN),
                            message="GPUTypeKnown condition")
    assert cond["status"] == "False" and cond["reason"] == REASON_UNKNOWN_GPU_TYPE
    assert "spec.resources.gpuType 'nvidia-a10O'" in cond["message"]
    event = cluster.wait_for(
        lambda: next((e for e in checks.events_for(cluster, "typo-gpu", "team-a")
                      if e.get("reason") == REASON_UNKNOWN_GPU_TYPE), None),
        message="UnknownGPUType Event",
    )
    assert event["type"] == "Warning"
    cluster.create(AJOBS, job_manifest("known-gpu", "team-a", resources={"workers": 1, "gpuType": "nvidia-a100"}))
    cluster.wait_for(lambda: checks.status_of(cluster, "known-gpu", "team-a").get("phase"), message="reconciled")
    assert checks.condition(cluster, "known-gpu", "team-a", CONDITION_GPU_TYPE_KNOWN) is None
