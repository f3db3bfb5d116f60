"""Operator settings: YAML file, env overrides, and one clear error per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kadapt_operator import settings as settings_module
from kadapt_operator.settings import (
    DEFAULT_GPU_TYPE,
    SETTINGS_PATH_ENV,
    OperatorSettings,
    SettingsError,
    env_var,
    load_settings,
)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_without_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "DEFAULT_SETTINGS_PATH", tmp_path / "absent.yaml")
    settings = load_settings(env={})
    assert settings == OperatorSettings()
    assert settings.progress_port == 9090
    assert DEFAULT_GPU_TYPE in settings.gpu_prices


def test_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "DEFAULT_SETTINGS_PATH", write(tmp_path, {"currency": "JPY"}))
    assert load_settings(env={}).currency == "JPY"


def test_file_with_snake_and_camel_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "trainerImage": "registry.example/kadapt:1.2",
            "image_pull_policy": "Always",
            "gpuPrices": {"default": 2.0, "nvidia-h100": 4.5},
            "currency": "EUR",
            "poll_interval_seconds": 3,
            "defaultQueueName": "research",
            "namespaceBudgets": {"team-a": 100},
        },
    )
    s = load_settings(path, env={})
    assert s.trainer_image == "registry.example/kadapt:1.2"
    assert s.image_pull_policy == "Always"
    assert s.gpu_prices == {"default": 2.0, "nvidia-h100": 4.5}
    assert s.currency == "EUR"
    assert s.poll_interval_seconds == 3.0
    assert s.default_queue_name == "research"
    assert s.namespace_budgets == {"team-a": 100.0}


def test_price_falls_back_to_default(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"gpuPrices": {"default": 1.5, "a100": 3.0}}), env={})
    assert s.price_for("a100") == 3.0
    assert s.price_for("nvidia-l4") == 1.5


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"trainerImage": "from-file", "progressPort": 9000, "gpuPrices": {"default": 1}})
    env = {
        env_var("trainer_image"): "from-env",
        env_var("progress_port"): "9191",
        env_var("gpu_prices"): "default=2.5, a100=3.9",
        env_var("namespace_budgets"): '{"team-a": 50}',
        "KADAPT_PVC_ROOT": "/ignored/not/a/setting",
    }
    s = load_settings(path, env=env)
    assert s.trainer_image == "from-env"
    assert s.progress_port == 9191
    assert s.gpu_prices == {"a100": 3.9, "default": 2.5}
    assert s.namespace_budgets == {"team-a": 50.0}


def test_config_path_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, {"currency": "CHF"})
    assert load_settings(env={SETTINGS_PATH_ENV: str(path)}).currency == "CHF"


def test_empty_env_queue_name_clears_it(tmp_path: Path) -> None:
    path = write(tmp_path, {"defaultQueueName": "q"})
    assert load_settings(path, env={env_var("default_queue_name"): ""}).default_queue_name is None


def test_chart_style_empty_queue_name_means_none(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, {"default_queue_name": ""}), env={}).default_queue_name is None


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text("")
    assert load_settings(path, env={}) == OperatorSettings()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"gpuPrices": {"a100": 3.0}}, ["gpu_prices", "'default'"]),
        ({"gpuPrices": {"default": -1}}, ["gpu_prices", ">= 0"]),
        ({"progressPort": 70000}, ["progress_port", "65535"]),
        ({"pollIntervalSeconds": 0}, ["poll_interval_seconds", "greater than 0"]),
        ({"imagePullPolicy": "Sometimes"}, ["image_pull_policy", "IfNotPresent"]),
        ({"namespaceBudgets": {"team-a": 0}}, ["namespace_budgets", "team-a"]),
        (
            {"restartBackoffSeconds": 60, "restartBackoffMaxSeconds": 10},
            ["restart_backoff_max_seconds", "restart_backoff_seconds"],
        ),
        ({"defaultQueueName": "Team Queue"}, ["default_queue_name", "pattern"]),
        ({"metricsPort": 9090}, ["metrics_port", "progress_port", "differ"]),
        ({"trainer_imag": "x"}, ["unknown key 'trainer_imag'", "did you mean 'trainer_image'"]),
    ],
)
def test_bad_file_value_names_the_key(tmp_path: Path, data: dict[str, object], expected: list[str]) -> None:
    path = write(tmp_path, data)
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    for part in expected:
        assert part in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("progress_port", "ninety", "progress_port"),
        ("gpu_prices", "{not json", "not valid JSON"),
        ("gpu_prices", "default", "not KEY=VALUE"),
        ("gpu_prices", "a100=3", "'default'"),
        ("gpu_prices", "default=cheap", "gpu_prices.default"),
        ("poll_interval_seconds", "-1", "poll_interval_seconds"),
    ],
)
def test_bad_env_value_names_the_variable(var: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env={env_var(var): value})
    assert expected in str(info.value)
    assert env_var(var) in str(info.value)


def test_named_file_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SettingsError, match=r"nope\.yaml: cannot read"):
        load_settings(missing, env={})
    with pytest.raises(SettingsError, match=r"nope\.yaml: cannot read"):
        load_settings(env={SETTINGS_PATH_ENV: str(missing)})


@pytest.mark.parametrize("text", ["- a\n- b\n", "a: [unclosed\n"])
def test_file_must_be_a_yaml_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match="operator settings"):
        load_settings(path, env={})


def test_settings_are_frozen() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        OperatorSettings().currency = "EUR"  # type: ignore[misc]
