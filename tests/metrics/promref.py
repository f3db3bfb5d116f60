"""Helpers for the metrics tests: parse the metrics reference table, scrape and parse /metrics."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_HEADING = "Metrics reference"

_ROW = re.compile(r"^\|\s*`(kadapt_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|([^|]+)\|\s*$")


@dataclass(frozen=True)
class MetricRef:
    """One row of the reference table."""

    name: str
    type: str
    labels: frozenset[str]
    meaning: str


def reference_source() -> Path:
    """README.md's "Metrics reference" section: the one place the reference lives."""
    return ROOT / "README.md"


def parse_reference(text: str, *, require_section: bool = False) -> dict[str, MetricRef]:
    """Every ``| `kadapt_...` | type | labels | meaning |`` row of the reference section."""
    section = text
    match = re.search(rf"^(#+)\s+{REFERENCE_HEADING}\s*$", text, re.MULTILINE)
    if match is None and require_section:
        return {}
    if match:
        level = len(match.group(1))
        rest = text[match.end():]
        end = re.search(rf"^#{{1,{level}}}\s", rest, re.MULTILINE)
        section = rest[: end.start()] if end else rest
    refs: dict[str, MetricRef] = {}
    for line in section.splitlines():
        row = _ROW.match(line.strip())
        if not row:
            continue
        name, kind, labels_cell, meaning = row.groups()
        labels = frozenset(re.findall(r"`([a-z_][a-z0-9_]*)`", labels_cell))
        assert name not in refs, f"{name} is listed twice in the metrics reference"
        refs[name] = MetricRef(name, kind, labels, meaning.strip())
    return refs


def exposed_name(family: Metric) -> str:
    """The name users query: counters carry ``_total`` (the parser strips it from the family)."""
    return family.name + "_total" if family.type == "counter" else family.name


def series_labels(family: Metric) -> set[frozenset[str]]:
    """The label-name sets of a family's samples (``le`` of histogram buckets left out)."""
    return {frozenset(k for k in s.labels if k not in ("le", "quantile")) for s in family.samples}


def scrape(url: str) -> dict[str, Metric]:
    """GET a /metrics URL over HTTP and parse it with prometheus-client's parser."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        ctype = resp.headers.get("Content-Type", "")
        assert ctype.startswith("text/plain"), ctype
        text = resp.read().decode()
    return {exposed_name(f): f for f in text_string_to_metric_families(text)}


def check_against_reference(families: dict[str, Metric], reference: dict[str, MetricRef], prefix: str) -> None:
    """Every exposed ``prefix`` family is in the reference with the same type and label names."""
    for name, family in families.items():
        if not name.startswith(prefix):
            continue
        assert name in reference, f"{name} is exposed but missing from the metrics reference"
        ref = reference[name]
        assert family.type == ref.type, f"{name}: exposed as {family.type}, reference says {ref.type}"
        for labels in series_labels(family):
            assert labels == ref.labels, f"{name}: labels {sorted(labels)}, reference says {sorted(ref.labels)}"
