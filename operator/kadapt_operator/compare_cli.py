"""``kadapt compare FILE --strategies ...``: on this machine, or with ``--cluster`` as AdaptationJobs.

Locally, each strategy runs through ``kadapt run`` (:mod:`kadapt_operator.local.compare`).
With ``--cluster`` the same comparison runs where the team's GPUs are: one AdaptationJob per
strategy, named ``<name>-<strategy>`` and labelled ``kadapt.dev/comparison=<name>`` and
``kadapt.dev/strategy=<strategy>`` (``kubectl get aj -l kadapt.dev/comparison=<name>``), with
the same data, split and seed. The command creates them through the official ``kubernetes``
client (the operator's own :class:`~kadapt_operator.runtime.client.KubeClient`, logged in the
way ``kubectl`` is), waits on their status phases, and builds the same table, JSON and chart
from their status as the local mode does from its runs.

Running it again adopts the jobs of the same comparison instead of training them twice (a
job of that name with another spec is an error that names it), so an interrupted wait or a
``--timeout`` is resumed by the same command. This module sits above both the local runner
and the runtime (see the layers in ``pyproject.toml``): the only place that may use both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from kadapt_operator.api import FAILED, MUTABLE_SPEC_FIELDS, SUCCEEDED, AdaptationJobSpec, AdaptationJobStatus
from kadapt_operator.labels import LABEL_COMPARISON, LABEL_STRATEGY
from kadapt_operator.local.compare import (
    JSON_FILE,
    CompareRow,
    Comparison,
    compare,
    finish,
    parse_strategies,
    show,
    strategy_document,
)
from kadapt_operator.local.runner import DEFAULT_RUNS_DIR, RunInvalid, RunOptions, load_one_job
from kadapt_operator.output import OutputFormat
from kadapt_operator.validation import SpecError, SpecInvalid, validate_object

if TYPE_CHECKING:
    from kadapt_operator.runtime.client import ApiError, KubeClient

USER_AGENT = "kadapt-compare"
#: Seconds between two reads of the jobs' status while waiting.
POLL_SECONDS = 2.0


class ClusterError(Exception):
    """The comparison could not go on; the message is one line that names the fix."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how long ``kadapt compare --cluster`` works."""

    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str | None = None
    #: Stop waiting after this many seconds (None: until every job finished).
    timeout: float | None = None
    poll_seconds: float = POLL_SECONDS


# -- the pure parts: the jobs, their spec check, status -> row, errors -> one line ---------------
def comparison_namespace(flag: str | None, manifest: str | None, context: str | None, source: str) -> str:
    """``--namespace``, else the manifest's ``metadata.namespace``, else the context's, else ``default``.

    Raises:
        ClusterError: when ``--namespace`` and the manifest name different namespaces (as kubectl refuses).
    """
    if flag and manifest and flag != manifest:
        raise ClusterError(
            f"{source}: metadata.namespace is {manifest!r} but --namespace is {flag!r}; drop one of them"
        )
    return flag or manifest or context or "default"


def comparison_jobs(
    job_doc: dict[str, Any], strategies: list[str], namespace: str, source: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """One AdaptationJob manifest per strategy (validated), and the notes on what was filled in.

    ``job_doc`` is the validated job as a manifest dict. Each job keeps the manifest's labels and
    annotations and gains the comparison's two labels.

    Raises:
        RunInvalid: naming the strategy's job and the field (e.g. a name too long for its pods).
    """
    name = job_doc["metadata"]["name"]
    jobs: list[dict[str, Any]] = []
    notes: list[str] = []
    for strategy in strategies:
        doc, job_notes = strategy_document(job_doc, strategy, source)
        doc.pop("status", None)
        meta = doc["metadata"]
        doc["metadata"] = {
            "name": meta["name"],
            "namespace": namespace,
            "labels": {**(meta.get("labels") or {}), LABEL_COMPARISON: name, LABEL_STRATEGY: strategy},
            **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
        }
        try:
            validate_object(doc, source)
        except SpecInvalid as exc:
            raise RunInvalid(
                source, [SpecError(e.path, f"{e.message} (in the {strategy} job {meta['name']})") for e in exc.errors]
            ) from None
        jobs.append(doc)
        notes.extend(job_notes)
    return jobs, notes


def spec_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The ``spec.<field>`` paths in which a stored job differs from the one this comparison wants.

    Both sides are read through the API model, so defaults the API server filled in do not
    count; nor do ``budget`` and ``runPolicy``, which may change on a running job.
    """

    def normal(spec: dict[str, Any]) -> dict[str, Any] | None:
        try:
            dumped = AdaptationJobSpec.model_validate(spec).model_dump(mode="json", by_alias=True, exclude_none=True)
        except ValidationError:
            return None
        return {k: v for k, v in dumped.items() if k not in MUTABLE_SPEC_FIELDS}

    have, want = normal(stored), normal(wanted)
    if have is None or want is None:
        return ["spec"]
    return [f"spec.{key}" for key in sorted(set(have) | set(want)) if have.get(key) != want.get(key)]


def _seconds(start: datetime | None, end: datetime | None) -> float:
    return (end - start).total_seconds() if start is not None and end is not None else 0.0


def row_of(strategy: str, obj: dict[str, Any], waiting: str | None = None) -> CompareRow:
    """A job's row of the table from its status: the figures the operator recorded.

    ``waiting`` is the reason to show for a job that had not finished (the wait gave up).
    Accuracy and macro-F1 are the final validation figures (``status.output.metrics``);
    wall time runs from the first running pod to completion; GPU-seconds and cost are the
    operator's accounting.
    """
    status = AdaptationJobStatus.model_validate(obj.get("status") or {})
    phase = status.phase or "Pending"
    reason = waiting
    if phase == FAILED:
        failed = next((c for c in status.conditions if c.type == FAILED and c.status == "True"), None)
        reason = f"{failed.reason}: {failed.message}" if failed is not None else "Failed (no condition recorded)"
    metrics = status.output.metrics if phase == SUCCEEDED else {}
    return CompareRow(
        strategy=status.strategy.resolved or strategy,
        status=phase.lower(),
        trainable_params=status.parameters.trainable,
        total_params=status.parameters.total,
        accuracy=metrics.get("accuracy"),
        macro_f1=metrics.get("macro_f1"),
        wall_seconds=_seconds(status.start_time, status.completion_time),
        gpu_seconds=status.cost.gpu_seconds,
        cost=status.cost.cost_so_far,
        run_dir=None,
        reason=reason,
        job=str(obj.get("metadata", {}).get("name") or ""),
    )


def settled(obj: dict[str, Any], evaluates: bool) -> bool:
    """Whether a job is done for the comparison: Failed, or Succeeded with its final figures.

    The operator records the trainer's final figures on a succeeded job from rank 0's
    termination message, possibly one event after the phase; a job that evaluates
    (``evaluates``: it has a validation split) is settled once they are in status.
    """
    status = obj.get("status") or {}
    if status.get("phase") == FAILED:
        return True
    return status.get("phase") == SUCCEEDED and (not evaluates or bool((status.get("output") or {}).get("metrics")))


def explain(exc: ApiError, action: str, host: str, namespace: str) -> str:
    """One line for a failed API request: what failed, why, and the fix."""
    if exc.status == 0:
        return (
            f"cannot reach the Kubernetes API server at {host} ({exc.message}); check that the cluster is up and "
            "that --kubeconfig/--context point at it (kubectl cluster-info)"
        )
    if exc.status == 401:
        return (
            f"{action}: the API server at {host} rejected the credentials ({exc.message}); "
            "log in again or refresh the kubeconfig's token"
        )
    if exc.status == 403:
        return (
            f"{action}: forbidden ({exc.message}); you need get and create on adaptationjobs.kadapt.dev in "
            f"namespace {namespace}: ask an admin to bind you the edit ClusterRole there "
            f"(kubectl create rolebinding kadapt-edit --clusterrole=edit --user=YOU -n {namespace}); "
            "the kadapt chart aggregates AdaptationJobs into it"
        )
    if exc.status == 404 and "namespace" in exc.message:
        return (
            f"{action}: namespace {namespace} does not exist on {host}; create it "
            f"(kubectl create namespace {namespace}) or choose another with --namespace"
        )
    return f"{action}: HTTP {exc.status} {exc.reason}: {exc.message}"


def crd_missing(host: str) -> str:
    """The line for an API server without the AdaptationJob CRD."""
    return (
        f"the AdaptationJob CRD (adaptationjobs.kadapt.dev) is not installed on {host}: install kadapt "
        "(helm install kadapt charts/kadapt) or apply the CRD (kadapt crd | kubectl apply -f -)"
    )


def _cleanup_hint(created: list[str], namespace: str, comparison: str) -> str:
    if not created:
        return " No job was created."
    return (
        f" Created before that: {', '.join(created)} (namespace {namespace}); they run on, and the same command "
        f"adopts them; to remove them: kubectl delete adaptationjobs -n {namespace} -l {LABEL_COMPARISON}={comparison}"
    )


# -- talking to the cluster ------------------------------------------------------------------------
async def submit(client: KubeClient, doc: dict[str, Any]) -> bool:
    """Create one job, or adopt the existing one of the same spec; True when created.

    Raises:
        ApiError: when the API server refuses the request.
        ClusterError: when a job of that name exists with another spec.
    """
    from kadapt_operator.runtime.client import ADAPTATION_JOBS, ApiError

    meta = doc["metadata"]
    try:
        await client.create(doc)
    except ApiError as exc:
        if exc.status != 409:
            raise
    else:
        return True
    stored = await client.get(ADAPTATION_JOBS, meta["namespace"], meta["name"])
    if stored is None:
        raise ClusterError(
            f"AdaptationJob {meta['namespace']}/{meta['name']} is being deleted; wait until it is gone and run again"
        )
    differ = spec_differences(stored.get("spec") or {}, doc["spec"])
    if differ:
        verb = "differs" if len(differ) == 1 else "differ"
        raise ClusterError(
            f"AdaptationJob {meta['namespace']}/{meta['name']} already exists with another spec "
            f"({', '.join(differ)} {verb}); delete it (kubectl delete adaptationjob {meta['name']} -n "
            f"{meta['namespace']}) to compare afresh, or give the manifest another metadata.name"
        )
    return False


async def wait_for_jobs(
    client: KubeClient,
    namespace: str,
    names: list[str],
    evaluates: bool,
    options: ClusterOptions,
    report: Callable[[str], None],
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Poll the jobs' status until each is settled or the timeout; the objects and those still pending.

    Raises:
        ApiError: when a read fails.
        ClusterError: when a job was deleted meanwhile.
    """
    from kadapt_operator.runtime.client import ADAPTATION_JOBS

    loop = asyncio.get_running_loop()
    deadline = None if options.timeout is None else loop.time() + options.timeout
    objects: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    pending = list(names)
    while True:
        for name in pending:
            obj = await client.get(ADAPTATION_JOBS, namespace, name)
            if obj is None:
                raise ClusterError(f"AdaptationJob {namespace}/{name} was deleted while kadapt compare waited for it")
            objects[name] = obj
            phase = (obj.get("status") or {}).get("phase") or "Pending"
            if seen.get(name) != phase:
                seen[name] = phase
                report(f"{namespace}/{name}: {phase}")
        pending = [n for n in pending if not settled(objects[n], evaluates)]
        if not pending or (deadline is not None and loop.time() >= deadline):
            return objects, pending
        wait = options.poll_seconds if deadline is None else min(options.poll_seconds, deadline - loop.time())
        await asyncio.sleep(max(wait, 0.0))


async def _run_on_cluster(
    client: KubeClient,
    host: str,
    jobs: list[dict[str, Any]],
    strategies: list[str],
    comparison: str,
    evaluates: bool,
    options: ClusterOptions,
    console: Console,
) -> tuple[list[CompareRow], str]:
    """Create or adopt every job, wait, and read the rows and the currency from their status."""
    from kadapt_operator.runtime.client import ADAPTATION_JOBS, ApiError

    namespace = jobs[0]["metadata"]["namespace"]
    try:
        if not await client.serves(ADAPTATION_JOBS):
            raise ClusterError(crd_missing(host) + " No job was created.")
    except ApiError as exc:
        raise ClusterError(explain(exc, "reading the API server's discovery", host, namespace)) from None
    created: list[str] = []
    for doc in jobs:
        name = doc["metadata"]["name"]
        try:
            if await submit(client, doc):
                created.append(name)
                console.print(f"created AdaptationJob {namespace}/{name}", highlight=False)
            else:
                console.print(f"adopted AdaptationJob {namespace}/{name} (same spec)", highlight=False)
        except ApiError as exc:
            line = explain(exc, f"creating AdaptationJob {namespace}/{name}", host, namespace)
            raise ClusterError(line + _cleanup_hint(created, namespace, comparison)) from None
        except ClusterError as exc:
            raise ClusterError(str(exc) + _cleanup_hint(created, namespace, comparison)) from None
    names = [doc["metadata"]["name"] for doc in jobs]
    try:
        objects, pending = await wait_for_jobs(
            client, namespace, names, evaluates, options, lambda line: console.print(line, highlight=False)
        )
    except ApiError as exc:
        line = explain(exc, "reading the jobs' status", host, namespace)
        raise ClusterError(f"{line}; the jobs run on: the same command adopts them and waits again") from None
    waiting = f"not finished after --timeout {options.timeout:g}s; the same command waits again" if pending else None
    rows = [
        row_of(strategy, objects[name], waiting if name in pending else None)
        for strategy, name in zip(strategies, names, strict=True)
    ]
    return rows, AdaptationJobStatus.model_validate(objects[names[0]].get("status") or {}).cost.currency


def compare_on_cluster(
    manifest: Path, strategies: list[str], options: ClusterOptions, run_dir: Path | None, console: Console
) -> Comparison:
    """Create (or adopt) one AdaptationJob per strategy, wait for them, and compare them from their status.

    Raises:
        RunInvalid: when the manifest, or one strategy's job, is invalid (nothing is created).
        ClusterError: no credentials, no cluster, no CRD, no permission, a clashing job, or Ctrl-C;
            the message says which jobs were created.
    """
    from kadapt_operator.runtime.client import KubeClient
    from kadapt_operator.runtime.login import KubeconfigError, user_configuration

    job = load_one_job(manifest)
    source = str(manifest)
    try:
        cfg, context_namespace = user_configuration(options.kubeconfig, options.context)
    except KubeconfigError as exc:
        raise ClusterError(str(exc)) from None
    explicit = job.metadata.namespace if "namespace" in job.metadata.model_fields_set else None
    namespace = comparison_namespace(options.namespace, explicit, context_namespace, source)
    doc = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    jobs, notes = comparison_jobs(doc, strategies, namespace, source)
    dataset = job.spec.dataset
    evaluates = dataset.validation_split > 0 or dataset.validation_uri is not None
    name = job.metadata.name

    async def run() -> tuple[list[CompareRow], str]:
        client = KubeClient(cfg, user_agent=USER_AGENT)
        try:
            return await _run_on_cluster(client, cfg.host, jobs, strategies, name, evaluates, options, console)
        finally:
            await client.close()

    try:
        rows, currency = asyncio.run(run())
    except KeyboardInterrupt:
        raise ClusterError(
            f"stopped waiting; the jobs run on in namespace {namespace}: the same command adopts them and waits "
            f"again (kubectl get adaptationjobs -n {namespace} -l {LABEL_COMPARISON}={name})"
        ) from None
    folder = (run_dir or DEFAULT_RUNS_DIR / f"{name}-compare").resolve()
    return finish(
        Comparison(
            job=name,
            currency=currency,
            rows=rows,
            json_path=str(folder / JSON_FILE),
            notes=notes,
            namespace=namespace,
        )
    )


# -- the command -----------------------------------------------------------------------------------
def compare_command(
    file: Path = typer.Argument(..., help="An AdaptationJob manifest (one job)."),
    strategies: str = typer.Option(
        "head-only,lora,partial,full", "--strategies", help="Comma-separated strategies to run and compare."
    ),
    run_dir: Path | None = typer.Option(
        None,
        "--run-dir",
        help="Where compare.json, compare.png and (locally) the runs go. Default: ./kadapt-runs/<job>-compare.",
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Override spec.resources.workers (local)."),
    procs_per_worker: int | None = typer.Option(
        None, "--procs-per-worker", min=1, help="Processes per worker on the CPU (local; overrides gpusPerWorker)."
    ),
    settings: Path | None = typer.Option(
        None, "--settings", help="Operator settings YAML (GPU prices, currency; local: the cluster has its own)."
    ),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--output", "-o", help="text or json."),
    cluster: bool = typer.Option(
        False, "--cluster", help="Create one AdaptationJob per strategy on the cluster and wait for them."
    ),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="With --cluster: the jobs' namespace (default: the manifest's, the context's)."
    ),
    kubeconfig: Path | None = typer.Option(
        None, "--kubeconfig", help="With --cluster: the kubeconfig (default: $KUBECONFIG, ~/.kube/config)."
    ),
    context: str | None = typer.Option(None, "--context", help="With --cluster: the kubeconfig context to use."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="With --cluster: stop waiting after S seconds (the jobs run on)."
    ),
) -> None:
    """Run the same job under several strategies; one table, JSON and a chart.

    On this machine each strategy runs through kadapt run; with --cluster each becomes an
    AdaptationJob (<name>-<strategy>, labelled kadapt.dev/comparison=<name>), and the same
    command run again adopts them.
    """
    names = parse_strategies(strategies)
    err = Console(stderr=True)
    local_only = {"--workers": workers, "--procs-per-worker": procs_per_worker, "--settings": settings}
    cluster_only = {"--namespace": namespace, "--kubeconfig": kubeconfig, "--context": context, "--timeout": timeout}
    wrong = [k for k, v in (local_only if cluster else cluster_only).items() if v is not None]
    if wrong:
        raise typer.BadParameter(
            f"{', '.join(wrong)} only with{'out' if cluster else ''} --cluster"
            + ("; on a cluster set them in the manifest and the operator's settings" if cluster else "")
        )
    try:
        if cluster:
            options = ClusterOptions(kubeconfig=kubeconfig, context=context, namespace=namespace, timeout=timeout)
            result = compare_on_cluster(file, names, options, run_dir, err)
        else:
            local = {"run_dir": run_dir, "workers": workers, "procs_per_worker": procs_per_worker}
            base = RunOptions(manifest=file, settings_file=settings, **local)
            result = compare(file, names, base, err)
    except RunInvalid as exc:  # kadapt validate FILE lists every error; one line here
        err.print(f"{exc.source}: invalid: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ClusterError as exc:
        err.print(f"kadapt compare --cluster: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(show(result, output))


def register(app: typer.Typer) -> None:
    """Add ``kadapt compare`` to the CLI."""
    app.command("compare")(compare_command)
