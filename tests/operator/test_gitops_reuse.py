"""GitOps against the real operator: a re-applied finished job is not trained again, and a job
keeps running the spec it started with when an immutable field slips past admission."""

from __future__ import annotations

import copy
import json
from typing import Any

from kadapt_operator.metrics import RESULT_REUSED, RESULT_SUCCEEDED
from kadapt_operator.results import ANN_RERUN, RESULTS_CONFIG_MAP
from kadapt_operator.runtime.cleanup import ANN_CHILDREN_REMOVED
from kadapt_trainer.final_summary import FinalSummary
from tests.harness import checks
from tests.harness.emulator import (
    AJOBS,
    CONFIGMAPS,
    JOBS,
    PODS,
    Cluster,
    OperatorHandle,
    complete_job_status,
    job_manifest,
    terminated_status,
)

NS = "team-a"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def _record(cluster: Cluster, name: str) -> dict[str, Any] | None:
    """The result recorded for the job ``name`` in the namespace's ``kadapt-results``."""
    data = (cluster.get(CONFIGMAPS, NS, RESULTS_CONFIG_MAP) or {}).get("data") or {}
    for raw in data.values():
        record: dict[str, Any] = json.loads(raw)
        if record.get("job") == name:
            return record
    return None


def _finish(cluster: Cluster, name: str, accuracy: float) -> dict[str, Any]:
    """Run the gang to success (rank 0 writes its final summary); wait for the recorded result."""
    pods = checks.start_gang(cluster, name, NS)
    summary = FinalSummary(step=10, total_steps=10, eval_metrics={"accuracy": accuracy}).to_message()
    for index, pod in enumerate(pods):
        done = terminated_status(0, message=summary if index == 0 else None)
        cluster.set_status(PODS, NS, pod["metadata"]["name"], done)
    cluster.set_status(JOBS, NS, name, complete_job_status(len(pods)))
    cluster.wait_for(lambda: checks.status_of(cluster, name, NS).get("phase") == "Succeeded", message="Succeeded")
    return cluster.wait_for(
        lambda: (r := _record(cluster, name)) and r.get("metrics") == {"accuracy": accuracy} and r,
        message=f"the result of {name} recorded with its final metrics",
    )


def _delete_with_children(cluster: Cluster, name: str) -> None:
    """Delete the AdaptationJob; play the garbage collector for whatever it still owned."""
    cluster.delete(AJOBS, NS, name)
    cluster.collect_garbage()
    cluster.collect_garbage()  # the pods, once their Job is gone


def test_a_gitops_reapply_after_the_ttl_succeeds_from_the_recorded_result_without_training(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    manifest = job_manifest("reapplied", NS, runPolicy={"ttlSecondsAfterFinished": 0})
    first = cluster.create(AJOBS, copy.deepcopy(manifest))
    record = _finish(cluster, "reapplied", 0.91)
    assert record["uid"] == first["metadata"]["uid"] and record["outputUri"] == "pvc://out/reapplied"
    cluster.wait_for(
        lambda: ANN_CHILDREN_REMOVED in (cluster.get(AJOBS, NS, "reapplied") or {})["metadata"].get("annotations", {}),
        message="the TTL removed the children",
    )
    assert cluster.get(JOBS, NS, "reapplied") is None
    # Someone deletes the finished job; Argo CD's self-heal (or a Flux re-apply) creates it again from git.
    cluster.delete(AJOBS, NS, "reapplied")
    again = cluster.create(AJOBS, copy.deepcopy(manifest))
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    succeeded = cluster.wait_for(
        lambda: (c := checks.condition(cluster, "reapplied", NS, "Succeeded")) and c["status"] == "True" and c,
        message="the re-created job Succeeded",
    )
    assert succeeded["reason"] == "ReusedResult"
    assert "reapplied" in succeeded["message"] and first["metadata"]["uid"] in succeeded["message"]
    status = checks.status_of(cluster, "reapplied", NS)
    assert status["phase"] == "Succeeded" and status["completionTime"]
    assert status["output"] == {"uri": "pvc://out/reapplied", "metrics": {"accuracy": 0.91}}
    ready = checks.condition(cluster, "reapplied", NS, "Ready")
    assert ready is not None and ready["status"] == "True"
    event = cluster.wait_for(
        lambda: next((e for e in checks.events_for(cluster, "reapplied", NS) if e.get("reason") == "ReusedResult"),
                     None),
        message="a ReusedResult Event",
    )
    assert event["type"] == "Normal" and "reapplied" in event["message"]
    # The operator has looked at the new job again since (ticks re-read everything): still no Job.
    operator.wait_handled(NS, "reapplied", more=2, trigger="tick")
    assert checks.creations(cluster, JOBS, NS, "reapplied") == 1, "the re-applied job must not train again"
    assert cluster.get(JOBS, NS, "reapplied") is None
    # counted as a completion of its own kind: finished, but no GPU used
    def completions(result: str) -> float | None:
        return operator.metrics.registry.get_sample_value(
            "kadapt_job_completions_total", {"namespace": NS, "result": result}
        )

    assert completions(RESULT_REUSED) == 1
    assert completions(RESULT_SUCCEEDED) == 1  # the first run only
    assert (_record(cluster, "reapplied") or {}).get("uid") == first["metadata"]["uid"], "the record names the run"


def test_a_rerun_annotation_trains_again_although_the_result_is_recorded(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    manifest = job_manifest("retrained", NS)
    cluster.create(AJOBS, copy.deepcopy(manifest))
    _finish(cluster, "retrained", 0.8)
    _delete_with_children(cluster, "retrained")
    manifest["metadata"]["annotations"] = {ANN_RERUN: "true"}
    cluster.create(AJOBS, manifest)
    cluster.wait_for(lambda: cluster.get(JOBS, NS, "retrained"), message="a Job for the rerun")
    assert checks.creations(cluster, JOBS, NS, "retrained") == 2
    assert checks.status_of(cluster, "retrained", NS).get("phase") != "Succeeded"


def test_a_changed_spec_trains_although_a_result_is_recorded_for_the_old_one(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(AJOBS, job_manifest("changed", NS))
    _finish(cluster, "changed", 0.7)
    _delete_with_children(cluster, "changed")
    changed = job_manifest("changed", NS)
    changed["spec"]["training"]["epochs"] = 7  # another spec hash, same output URI
    cluster.create(AJOBS, changed)
    cluster.wait_for(lambda: cluster.get(JOBS, NS, "changed"), message="a Job for the changed spec")
    assert checks.creations(cluster, JOBS, NS, "changed") == 2
    assert checks.status_of(cluster, "changed", NS).get("phase") != "Succeeded"


def _image(job: dict[str, Any]) -> str:
    return str(job["spec"]["template"]["spec"]["containers"][0]["image"])


def test_an_immutable_change_past_admission_is_not_rendered_and_not_observed(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(AJOBS, job_manifest("pinned", NS))
    pods = checks.start_gang(cluster, "pinned", NS)
    first = cluster.wait_for(lambda: cluster.get(JOBS, NS, "pinned"), message="the Job")
    # A change of a mutable field is acted on: observedGeneration follows it.
    cluster.patch(AJOBS, NS, "pinned", {"spec": {"runPolicy": {"backoffLimit": 5}}})
    cluster.wait_for(lambda: checks.status_of(cluster, "pinned", NS).get("observedGeneration") == 2,
                     message="observedGeneration 2 after a mutable change")
    # Immutable fields changed where admission did not stop it (no CEL here): ignored, and said so.
    seen = operator.handled(NS, "pinned", trigger="spec")
    cluster.patch(AJOBS, NS, "pinned", {"spec": {"image": "registry.example/other:latest", "queueName": "gpu"}})
    cluster.wait_for(lambda: operator.handled(NS, "pinned", trigger="spec") > seen, message="the change handled")
    assert (cluster.get(AJOBS, NS, "pinned") or {})["metadata"]["generation"] == 3
    assert checks.status_of(cluster, "pinned", NS)["observedGeneration"] == 2
    applied = checks.condition(cluster, "pinned", NS, "SpecApplied")
    assert applied is not None and applied["status"] == "False" and applied["reason"] == "ImmutableFieldChanged"
    assert "spec.image" in applied["message"] and "spec.queueName" in applied["message"]
    cluster.wait_for(
        lambda: any(e.get("reason") == "ImmutableFieldChanged" for e in checks.events_for(cluster, "pinned", NS)),
        message="a Warning Event",
    )
    # A worker fails: the gang restarts, rendered from the spec it started with.
    cluster.set_status(PODS, NS, pods[0]["metadata"]["name"], terminated_status(1))
    second = cluster.wait_for(
        lambda: (j := cluster.get(JOBS, NS, "pinned")) and j["metadata"]["uid"] != first["metadata"]["uid"] and j,
        message="the gang restarted",
    )
    assert _image(second) == _image(first) != "registry.example/other:latest"
    assert KUEUE_QUEUE_LABEL not in second["metadata"].get("labels", {})
    assert second["spec"]["suspend"] is False
    cluster.wait_for(lambda: checks.status_of(cluster, "pinned", NS).get("restarts") == 1, message="restart counted")
    assert checks.status_of(cluster, "pinned", NS)["observedGeneration"] == 2
    # Reverting the change applies the current generation again.
    cluster.patch(AJOBS, NS, "pinned", {"spec": {"image": None, "queueName": None}})
    cluster.wait_for(
        lambda: (c := checks.condition(cluster, "pinned", NS, "SpecApplied")) and c["status"] == "True",
        message="SpecApplied=True after the revert",
    )
    assert checks.status_of(cluster, "pinned", NS)["observedGeneration"] == 4
