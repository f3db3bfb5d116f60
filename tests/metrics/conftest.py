"""Fixtures for the metrics tests: the metrics reference table, scraping and parsing /metrics."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.metrics_core import Metric

from .promref import MetricRef, check_against_reference, parse_reference, reference_source, scrape


@pytest.fixture(scope="session")
def reference() -> dict[str, MetricRef]:
    refs = parse_reference(reference_source().read_text())
    assert refs, f"no metric rows found in {reference_source()}"
    return refs


@pytest.fixture
def scrape_url() -> Callable[[str], dict[str, Metric]]:
    return scrape


@pytest.fixture
def check_reference(
    reference: dict[str, MetricRef],
) -> Callable[[dict[str, Metric], str], None]:
    """``check(families, prefix)``: compare scraped families with the reference."""
    return lambda families, prefix: check_against_reference(families, reference, prefix)
