"""Operator settings: what a platform team configures once for every AdaptationJob.

Read from a YAML file (the Helm chart mounts ``/etc/kadapt/operator.yaml``; another path
comes from ``$KADAPT_OPERATOR_CONFIG``) and then from ``KADAPT_<FIELD>`` environment
variables, which win. Keys may be written snake_case or camelCase. Every bad value fails
at start-up with one error naming the key, where it came from, and what to write instead.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kadapt_operator import __version__
from kadapt_operator.cost import price_for
from kadapt_trainer.config import DEFAULT_PROGRESS_PORT

#: Where the Helm chart mounts the settings file.
DEFAULT_SETTINGS_PATH = Path("/etc/kadapt/operator.yaml")
#: Environment variable naming another settings file.
SETTINGS_PATH_ENV = "KADAPT_OPERATOR_CONFIG"
#: Prefix of per-field environment overrides (``KADAPT_TRAINER_IMAGE``, ...).
ENV_PREFIX = "KADAPT_"
#: Key of the price table used for GPU types it does not list.
DEFAULT_GPU_TYPE = "default"
DEFAULT_TRAINER_IMAGE = f"ghcr.io/kadapt/kadapt-trainer:{__version__}"
#: The operator's own Prometheus port (the trainer's is ``progress_port``); as in the Helm chart,
#: next to kopf's liveness endpoint on 8080.
DEFAULT_METRICS_PORT = 8000
#: Price per GPU-hour when the platform configures none (the Helm chart's default too).
DEFAULT_GPU_PRICE = 2.5

ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]


class BudgetPeriod(StrEnum):
    """How long a namespace budget lasts before its spend starts again at zero (UTC)."""

    MONTH = "month"
    WEEK = "week"
    DAY = "day"
    TOTAL = "total"


class SettingsError(ValueError):
    """Operator settings that cannot be used; the message names the key and its source."""


class OperatorSettings(BaseModel):
    """Platform-wide defaults and prices the operator applies to every job."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True, validate_default=True
    )

    trainer_image: str = Field(default=DEFAULT_TRAINER_IMAGE, min_length=1)
    image_pull_policy: ImagePullPolicy = "IfNotPresent"
    gpu_prices: dict[str, float] = Field(
        default_factory=lambda: {DEFAULT_GPU_TYPE: DEFAULT_GPU_PRICE},
        description="Price per GPU-hour by spec.resources.gpuType; 'default' prices every other type.",
    )
    currency: str = Field(default="USD", min_length=1, max_length=8)
    poll_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    metrics_port: int = Field(default=DEFAULT_METRICS_PORT, ge=1, le=65535)
    progress_port: int = Field(default=DEFAULT_PROGRESS_PORT, ge=1, le=65535)
    default_queue_name: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )
    restart_backoff_seconds: float = Field(default=10.0, ge=0)
    restart_backoff_max_seconds: float = Field(default=600.0, ge=0)
    namespace_budgets: dict[str, float] = Field(
        default_factory=dict, description="Cost cap per namespace, in `currency`, over all its jobs."
    )
    namespace_budget_period: BudgetPeriod = Field(
        default=BudgetPeriod.MONTH,
        description="How long a namespace budget lasts before its spend starts again at zero (UTC): "
        "month, week, day, or total (never).",
    )

    @field_validator("default_queue_name", mode="before")
    @classmethod
    def _empty_queue_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("gpu_prices")
    @classmethod
    def _prices_valid(cls, value: dict[str, float]) -> dict[str, float]:
        if DEFAULT_GPU_TYPE not in value:
            raise ValueError(
                f"needs a {DEFAULT_GPU_TYPE!r} entry for GPU types it does not list, e.g. {{default: 2.5}}"
            )
        bad = sorted(k for k, v in value.items() if v < 0)
        if bad:
            raise ValueError(f"prices must be >= 0 (negative for {', '.join(bad)})")
        return dict(sorted(value.items()))

    @field_validator("namespace_budgets")
    @classmethod
    def _budgets_positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in value.items() if v <= 0)
        if bad:
            raise ValueError(f"budgets must be > 0 (not for {', '.join(bad)}); remove a namespace to uncap it")
        return dict(sorted(value.items()))

    @model_validator(mode="after")
    def _backoff_ordered(self) -> OperatorSettings:
        if self.restart_backoff_max_seconds < self.restart_backoff_seconds:
            raise ValueError(
                f"restart_backoff_max_seconds ({self.restart_backoff_max_seconds}) must be >= "
                f"restart_backoff_seconds ({self.restart_backoff_seconds})"
            )
        if self.metrics_port == self.progress_port:
            raise ValueError(f"metrics_port and progress_port must differ (both {self.metrics_port})")
        return self

    def price_for(self, gpu_type: str) -> float:
        """Price per GPU-hour of ``gpu_type``, falling back to the 'default' entry."""
        return price_for(self.gpu_prices, gpu_type)


def _field_keys() -> dict[str, str]:
    """Every accepted spelling of a field (snake_case and camelCase) -> field name."""
    keys: dict[str, str] = {}
    for name, info in OperatorSettings.model_fields.items():
        keys[name] = name
        keys[info.alias or to_camel(name)] = name
    return keys


def env_var(field: str) -> str:
    """The environment variable overriding ``field`` (``trainer_image`` -> ``KADAPT_TRAINER_IMAGE``)."""
    return ENV_PREFIX + field.upper()


def _parse_mapping(raw: str, source: str) -> dict[str, Any]:
    """A price or budget table from an env var: JSON object or ``a100=3.5,default=2``."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f'{source}: not valid JSON ({exc.msg}); write e.g. {{"default": 2.5}}') from None
        if not isinstance(value, dict):
            raise SettingsError(f"{source}: expected a JSON object")
        return value
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{source}: {part!r} is not KEY=VALUE; write e.g. default=2.5,a100=3.9")
        out[key.strip()] = val.strip()
    return out


def _from_env(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Overrides found in ``env`` and, per field, the variable they came from."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, info in OperatorSettings.model_fields.items():
        var = env_var(name)
        if var not in env:
            continue
        raw = env[var]
        ann = str(info.annotation)
        if ann.startswith("dict"):
            values[name] = _parse_mapping(raw, f"environment variable {var}")
        else:
            values[name] = raw
        sources[name] = f"environment variable {var}"
    return values, sources


def _from_file(path: Path) -> dict[str, Any]:
    """Settings in a YAML file, keys normalised to field names.

    Raises:
        SettingsError: unreadable file, not YAML, not a mapping, or an unknown key.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SettingsError(f"operator settings {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"operator settings {path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"operator settings {path}: expected a mapping of setting: value")
    keys = _field_keys()
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = keys.get(str(key))
        if name is None:
            guess = difflib.get_close_matches(str(key), list(keys), n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else f"known keys: {', '.join(OperatorSettings.model_fields)}"
            raise SettingsError(f"operator settings {path}: unknown key {key!r}; {hint}")
        out[name] = value
    return out


def _error_message(exc: ValidationError, sources: Mapping[str, str]) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
        # Cross-field errors have no location: they name their fields in the message.
        fields = [loc[0]] if loc else [f for f in OperatorSettings.model_fields if f in msg]
        key = ".".join(loc) or (fields[0] if fields else "(settings)")
        where = ", ".join(dict.fromkeys(sources[f] for f in fields if f in sources))
        got = f" (got {err['input']!r})" if loc and not isinstance(err.get("input"), dict) else ""
        parts.append(f"{key}: {msg}{got}" + (f" [from {where}]" if where else ""))
    return "invalid operator settings: " + "; ".join(parts)


def settings_path(path: Path | None, env: Mapping[str, str]) -> tuple[Path | None, bool]:
    """The settings file to read and whether it must exist (named explicitly)."""
    if path is not None:
        return path, True
    if env.get(SETTINGS_PATH_ENV):
        return Path(env[SETTINGS_PATH_ENV]), True
    return DEFAULT_SETTINGS_PATH, False


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from ``path`` (or ``$KADAPT_OPERATOR_CONFIG``, or the default file if present), then env.

    Raises:
        SettingsError: naming the key, where its value came from and what is expected.
    """
    env = os.environ if env is None else env
    file, required = settings_path(path, env)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if file is not None and (required or file.exists()):
        values = _from_file(file)
        sources = {name: f"file {file}" for name in values}
    env_values, env_sources = _from_env(env)
    values.update(env_values)
    sources.update(env_sources)
    try:
        return OperatorSettings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_error_message(exc, sources)) from None
