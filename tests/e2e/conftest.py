"""The end-to-end cluster of a test module: KMock's emulator, ``LocalKubelet`` and the real operator.

Each module provides ``run_dir``: the local "node" whose claims (``run_dir/pvc/<claim>``) hold
the tiny model and the data its jobs read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.emulator import Cluster, OperatorHandle
from tests.harness.kubelet import LocalKubelet

NS = "default"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(namespaces=(NS,)) as c:
        yield c


@pytest.fixture(scope="module")
def kubelet(cluster: Cluster, run_dir: Path) -> Iterator[LocalKubelet]:
    with LocalKubelet(cluster, run_dir, grace_seconds=15) as k:
        yield k
    assert not k.errors, k.errors


@pytest.fixture(scope="module")
def operator(cluster: Cluster, kubelet: LocalKubelet) -> Iterator[OperatorHandle]:
    # Pods announce their /progress port in an annotation (they share 127.0.0.1): no settings override.
    with cluster.operator(namespaces=[NS]) as handle:
        yield handle
