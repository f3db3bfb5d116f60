"""The chart's Argo CD health check, run as Argo CD runs it (Lua 5.1, the object in ``obj``).

Argo CD evaluates ``resource.customizations.health.<group>_<kind>`` with gopher-lua, a Lua 5.1
interpreter; ``lupa.lua51`` runs the same script against status fixtures built with the status
model the operator writes, so a renamed phase or condition shows up here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from lupa import lua51

from kadapt_operator.api import AdaptationJobStatus, Condition, OutputStatus, Progress
from tests.helm.chart import CHART_DIR

HEALTH_LUA = CHART_DIR / "files" / "health.lua"
README = Path(__file__).resolve().parents[2] / "README.md"
ARGO_KEY = "resource.customizations.health.kadapt.dev_AdaptationJob"


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run health.lua on ``obj`` the way Argo CD does; returns (status, message)."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    script = HEALTH_LUA.read_text()
    result = runtime.execute(script)
    return str(result["status"]), str(result["message"])


def _cond(kind: str, status: str, reason: str, message: str = "") -> Condition:
    return Condition(type=kind, status=status, reason=reason, message=message)


def _job(phase: str | None = None, *conditions: Condition, **fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kadapt.dev/v1alpha1",
        "kind": "AdaptationJob",
        "metadata": {"name": "j", "namespace": "team-a", "generation": 1},
        "spec": {},
    }
    if phase is not None:
        status = AdaptationJobStatus(phase=phase, conditions=list(conditions), **fields)
        obj["status"] = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    return obj


BUDGET_MSG = "spent 50.1 USD of spec.budget.maxCost 50 USD; raise spec.budget.maxCost to resume"
NS_MSG = "namespace team-a has spent 500 USD of its budget 500 USD; raise namespaceBudgets.team-a"

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no-status", _job(), "Progressing", "Waiting for the kadapt operator"),
    ("pending", _job("Pending"), "Progressing", "Pending"),
    ("queued", _job("Queued", _cond("Queued", "True", "WaitingForAdmission", "waiting in Kueue queue gpus")),
     "Progressing", "queue gpus"),
    ("created", _job("Created", _cond("Created", "True", "ChildrenCreated", "Job created")), "Progressing",
     "Job created"),
    ("running", _job("Running", progress=Progress(percent=42.5)), "Progressing", "42.5%"),
    ("restarting", _job("Restarting", _cond("Restarting", "True", "WorkerFailed", "restart 1/3")),
     "Progressing", "restart 1/3"),
    ("budget-raised-running", _job("Running", _cond("BudgetExceeded", "False", "WithinBudget", "within budget")),
     "Progressing", "Running"),
    ("succeeded", _job("Succeeded", output=OutputStatus(uri="pvc://models/out")), "Healthy", "pvc://models/out"),
    ("failed", _job("Failed", _cond("Failed", "True", "BackoffLimitExceeded", "3 restarts")), "Degraded",
     "3 restarts"),
    ("stopped-by-job-budget", _job("Suspended", _cond("Suspended", "True", "BudgetExceeded", "budget"),
                                   _cond("BudgetExceeded", "True", "MaxCostReached", BUDGET_MSG)),
     "Degraded", "spec.budget.maxCost"),
    ("stopped-by-namespace-budget", _job("Suspended", _cond("BudgetExceeded", "True", "NamespaceBudgetExceeded",
                                                            NS_MSG)),
     "Degraded", "namespaceBudgets.team-a"),
    ("suspended-by-user", _job("Suspended", _cond("Suspended", "True", "SuspendedByUser", "spec.runPolicy.suspend"),
                               _cond("BudgetExceeded", "False", "WithinBudget", "within budget")),
     "Suspended", "spec.runPolicy.suspend"),
    ("stalled", _job("Running", _cond("Stalled", "True", "CreateContainerConfigError", "secret hf-token missing")),
     "Degraded", "secret hf-token missing"),
]


@pytest.mark.parametrize(("obj", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health_follows_phase_and_conditions(obj: dict[str, Any], status: str, message: str) -> None:
    got_status, got_message = health(obj)
    assert got_status == status
    assert message in got_message


def test_readme_argocd_snippet_is_the_chart_file() -> None:
    """The README's argocd-cm snippet is health.lua itself, indented under the key."""
    text = README.read_text()
    match = re.search(rf"^( *){re.escape(ARGO_KEY)}: \|\n((?:\1  .*\n|\n)+)", text, re.M)
    assert match, f"README needs an argocd-cm snippet with {ARGO_KEY}"
    indent = match.group(1) + "  "
    body = "\n".join(line[len(indent):] for line in match.group(2).rstrip("\n").split("\n")) + "\n"
    assert body == HEALTH_LUA.read_text(), "copy charts/kadapt/files/health.lua into the README's argocd-cm snippet"
