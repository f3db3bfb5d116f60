"""Booking a namespace's spend: which jobs are booked, conflicts, and where the ledgers live.

``kadapt_operator.ledger.book_jobs`` is pure; ``runtime.spend.book_namespace`` is run here
against a scripted API client that conflicts on the first write, as a second writer would.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kadapt_operator.ledger import JobSpend, NamespaceLedger, book_jobs, ledger_name
from kadapt_operator.runtime import spend
from kadapt_operator.runtime.cli import in_cluster_namespace
from kadapt_operator.runtime.client import CONFIG_MAPS, ApiError, Kind
from kadapt_operator.runtime.options import RuntimeOptions
from kadapt_operator.runtime.world import AJ_INDEX, Runtime
from kadapt_operator.settings import OperatorSettings
from tests.harness.emulator import CONFIGMAPS, OPERATOR_NAMESPACE, Cluster
from tests.harness.emulator import ApiError as HarnessApiError

NOW = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
NS = "team-a"
HOME = "kadapt-system"


def test_book_jobs_books_live_and_departed_jobs_then_forgets_the_departed() -> None:
    ledger = NamespaceLedger(namespace=NS).book("gone", 1.0, 10.0, NOW).ledger
    booked = book_jobs(
        ledger,
        live=[JobSpend(uid="live", cost=2.0, gpu_seconds=20.0)],
        departed=[JobSpend(uid="gone", cost=1.5, gpu_seconds=15.0)],
        now=NOW,
    )
    assert booked.spent(NOW) == pytest.approx(3.5), "the departed job's last growth is booked"
    assert set(booked.jobs) == {"live"}


def test_a_departed_job_already_forgotten_is_not_booked_twice() -> None:
    # A booking ran after the job left the watch and before its deletion event: its mark is gone.
    ledger = NamespaceLedger(namespace=NS).book("gone", 1.0, 10.0, NOW).ledger.forget([])
    booked = book_jobs(ledger, live=[], departed=[JobSpend(uid="gone", cost=1.5, gpu_seconds=15.0)], now=NOW)
    assert booked.spent(NOW) == pytest.approx(1.0)


class ConflictingApi:
    """A ConfigMap store whose first write loses to another writer's (HTTP 409), as on a real API server."""

    def __init__(self, stored: dict[str, Any], rival_data: dict[str, str]) -> None:
        self.stored = stored
        self.rival_data = rival_data
        self.patches: list[dict[str, Any]] = []
        self.conflicts = 0

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        assert (kind, namespace, name) == (CONFIG_MAPS, HOME, ledger_name(NS))
        return copy.deepcopy(self.stored)

    async def patch(self, kind: Kind, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(body)
        if self.conflicts == 0:
            # Another writer books first: the stored version moves on, this write is refused.
            self.conflicts += 1
            self.stored["data"].update(self.rival_data)
            self.stored["metadata"]["resourceVersion"] = "8"
        if body["metadata"]["resourceVersion"] != self.stored["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified", "Conflict")
        for key, value in body["data"].items():
            if value is None:
                self.stored["data"].pop(key, None)
            else:
                self.stored["data"][key] = value
        return copy.deepcopy(self.stored)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the ledger exists: patch it")


def runtime_with(api: Any, jobs: dict[str, float]) -> Runtime:
    rt = Runtime(
        settings=OperatorSettings(namespace_budgets={NS: 10.0}),
        options=RuntimeOptions(namespaces=(NS,), operator_namespace=HOME),
    )
    rt.client = api
    rt.indices = {
        AJ_INDEX: {
            (NS, uid): [{"metadata": {"name": uid, "namespace": NS, "uid": uid, "resourceVersion": "1"},
                         "status": {"cost": {"costSoFar": cost, "gpuSeconds": cost * 1000}}}]
            for uid, cost in jobs.items()
        }
    }
    return rt


def test_a_conflicting_write_is_read_again_and_booked_again_nothing_twice() -> None:
    before = NamespaceLedger(namespace=NS).book("mine", 1.0, 1000.0, NOW).ledger
    rival = before.book("theirs", 2.0, 2000.0, NOW).ledger  # another writer booked a job this one does not see
    api = ConflictingApi(
        {"metadata": {"name": ledger_name(NS), "namespace": HOME, "resourceVersion": "7"}, "data": before.to_data()},
        rival_data=rival.to_data(),
    )
    rt = runtime_with(api, {"mine": 1.5})
    booked = asyncio.run(spend.book_namespace(rt, NS, [], NOW))
    assert api.conflicts == 1 and len(api.patches) == 2
    assert [p["metadata"]["resourceVersion"] for p in api.patches] == ["7", "8"], "each write names what it read"
    stored, _ = NamespaceLedger.from_data(NS, api.stored["data"])
    # mine grew by 0.5 (booked once, after the re-read); theirs was another job's, forgotten as not live here.
    assert stored.spent(NOW) == pytest.approx(1.0 + 2.0 + 0.5)
    assert booked == stored and rt.ledgers[NS] == stored


def test_a_namespace_without_jobs_or_spend_gets_no_ledger_object() -> None:
    class Empty:
        async def get(self, kind: Kind, namespace: str, name: str) -> None:
            return None

        async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
            raise AssertionError("nothing to book: no ledger object")

    rt = runtime_with(Empty(), {})
    booked = asyncio.run(spend.book_namespace(rt, NS, [], NOW))
    assert booked.spent(NOW) == 0.0 and rt.ledgers[NS] == booked


def test_the_ledgers_home_is_the_operators_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounted = tmp_path / "namespace"
    mounted.write_text("kadapt-system\n")
    assert in_cluster_namespace(mounted) == "kadapt-system"
    assert in_cluster_namespace(tmp_path / "absent") is None
    rt = Runtime(settings=OperatorSettings(namespace_budgets={NS: 1.0}), options=RuntimeOptions(namespaces=(NS,)))
    with pytest.raises(spend.NoOperatorNamespace, match="--operator-namespace or set POD_NAMESPACE"):
        spend.operator_namespace(rt)


def test_the_operator_refuses_budgets_without_a_home_for_their_ledgers(monkeypatch: pytest.MonkeyPatch) -> None:
    from kadapt_operator.runtime import cli

    monkeypatch.setattr(cli.in_cluster_namespace, "__defaults__", (Path("/nonexistent/namespace"),))
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.delenv("KADAPT_OPERATOR_CONFIG", raising=False)
    monkeypatch.setenv("KADAPT_NAMESPACE_BUDGETS", "team-a=100")
    app = typer.Typer()
    cli.register(app)

    @app.command()
    def other() -> None:  # a second command keeps typer in multi-command mode
        """Nothing."""

    result = CliRunner().invoke(app, ["operator", "--namespace", NS, "--no-metrics"])
    assert result.exit_code == 2, result.output
    assert "--operator-namespace" in result.output and "POD_NAMESPACE" in result.output


def test_the_emulator_refuses_a_write_based_on_an_older_read() -> None:
    with Cluster(namespaces=(NS,)) as cluster:
        made = cluster.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"name": "cm", "namespace": OPERATOR_NAMESPACE}, "data": {}})
        old = made["metadata"]["resourceVersion"]
        cluster.patch(CONFIGMAPS, OPERATOR_NAMESPACE, "cm", {"metadata": {"resourceVersion": old}, "data": {"a": "1"}})
        stale = {"metadata": {"resourceVersion": old}, "data": {"a": "2"}}
        with pytest.raises(HarnessApiError) as refused:
            cluster.patch(CONFIGMAPS, OPERATOR_NAMESPACE, "cm", stale)
        assert refused.value.status == 409
        assert (cluster.get(CONFIGMAPS, OPERATOR_NAMESPACE, "cm") or {})["data"] == {"a": "1"}
