"""Fixtures for operator tests: one emulator and one real operator per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.emulator import Cluster, OperatorHandle

NAMESPACES = ("team-a", "team-b")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """KMock's emulator over HTTP with the CRD and two namespaces."""
    with Cluster(namespaces=NAMESPACES) as c:
        yield c


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorHandle]:
    """The real kadapt operator (kopf) serving both namespaces of ``cluster``."""
    with cluster.operator(namespaces=list(NAMESPACES)) as handle:
        yield handle
