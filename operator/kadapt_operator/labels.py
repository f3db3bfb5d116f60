"""Names, labels and ownerReferences of an AdaptationJob's children, from one place.

The renderer, the operator (to find and adopt children) and the local runner all build
names and selectors from these helpers, so that a child created by one is recognised by
the others.
"""

from __future__ import annotations

import re
from typing import Any

from kadapt_operator.api import API_VERSION_FULL, AdaptationJob
from kadapt_trainer.config import API_GROUP, KIND

#: Standard Kubernetes recommended labels.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
#: kadapt's own selector label: every child and every pod of a job carries it.
LABEL_JOB_NAME = f"{API_GROUP}/job-name"
#: Kueue's queue label, copied onto the batch/v1 Job (never onto pods: Kueue's pod
#: integration would then gate each pod separately).
LABEL_QUEUE_NAME = "kueue.x-k8s.io/queue-name"
#: ``kadapt compare --cluster``: every AdaptationJob of one comparison carries the comparison's
#: name (the manifest's ``metadata.name``) and its own strategy, so ``kubectl get aj -l`` finds them.
LABEL_COMPARISON = f"{API_GROUP}/comparison"
LABEL_STRATEGY = f"{API_GROUP}/strategy"

APP_NAME = "kadapt"
PART_OF = "kadapt"
MANAGED_BY = "kadapt-operator"

#: Values of ``app.kubernetes.io/component``.
COMPONENT_CONFIG = "config"
COMPONENT_SERVICE = "rendezvous"
COMPONENT_JOB = "training"
COMPONENT_WORKER = "worker"

CONFIG_MAP_SUFFIX = "-config"

#: Kubernetes' limits on a DNS label (pod hostnames, Service names) and an object name.
DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def config_map_name(job_name: str) -> str:
    """The ConfigMap holding ``trainer.json`` and ``deepspeed.json``."""
    return f"{job_name}{CONFIG_MAP_SUFFIX}"


def service_name(job_name: str) -> str:
    """The headless Service: same name as the job, so pod DNS is ``<job>-<i>.<job>``."""
    return job_name


def batch_job_name(job_name: str) -> str:
    """The Indexed batch/v1 Job: same name as the AdaptationJob."""
    return job_name


def pod_hostname(job_name: str, index: int) -> str:
    """Hostname the Job controller gives the pod of completion index ``index``."""
    return f"{batch_job_name(job_name)}-{index}"


def master_address(job_name: str) -> str:
    """DNS name of rank 0's pod, resolvable inside the job's namespace."""
    return f"{pod_hostname(job_name, 0)}.{service_name(job_name)}"


def selector_labels(job_name: str) -> dict[str, str]:
    """Labels that select every pod (and child) of one job."""
    return {LABEL_JOB_NAME: job_name}


def child_labels(job: AdaptationJob, component: str) -> dict[str, str]:
    """The labels every child carries; only ``component`` differs between children."""
    name = job.metadata.name
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: PART_OF,
        **selector_labels(name),
    }


def owner_reference(job: AdaptationJob) -> dict[str, Any]:
    """An ownerReference to the AdaptationJob: controller, so GC and adoption work.

    Raises:
        ValueError: when the job has no uid (it was never stored by an API server).
    """
    if not job.metadata.uid:
        raise ValueError(f"AdaptationJob {job.metadata.name!r} has no metadata.uid; owners need a stored object")
    return {
        "apiVersion": API_VERSION_FULL,
        "kind": KIND,
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(job: AdaptationJob, component: str, name: str | None = None) -> dict[str, Any]:
    """``metadata`` of one child: name, namespace, labels and ownerReferences.

    A job read from a file (``kadapt render``, ``kadapt run``) has no uid yet; its children
    then carry no ownerReferences, rather than a made-up uid that the garbage collector
    would treat as a deleted owner.
    """
    meta: dict[str, Any] = {
        "name": name or job.metadata.name,
        "namespace": job.metadata.namespace,
        "labels": child_labels(job, component),
    }
    if job.metadata.uid:
        meta["ownerReferences"] = [owner_reference(job)]
    return meta


# -- what the API server accepts as a name ------------------------------------------------------
def is_dns_subdomain(value: str) -> bool:
    """A Kubernetes object name (Secrets, PVCs, PriorityClasses, LocalQueues)."""
    return len(value) <= DNS_SUBDOMAIN_MAX and bool(_DNS_1123_SUBDOMAIN.match(value))


def is_label_value(value: str) -> bool:
    """A valid label value (empty allowed)."""
    return len(value) <= DNS_LABEL_MAX and bool(_LABEL_VALUE.match(value))


def is_qualified_name(value: str) -> bool:
    """A label or taint key: ``[prefix/]name``, prefix a DNS subdomain."""
    prefix, slash, name = value.rpartition("/")
    if slash and not (prefix and is_dns_subdomain(prefix)):
        return False
    return 0 < len(name) <= DNS_LABEL_MAX and bool(_QUALIFIED_NAME.match(name))


def is_dns_1035_label(value: str) -> bool:
    """A Service name: a DNS label that starts with a letter."""
    return len(value) <= DNS_LABEL_MAX and bool(_DNS_1035.match(value))


def is_dns_label(value: str) -> bool:
    """A namespace name (RFC 1123 label)."""
    return len(value) <= DNS_LABEL_MAX and bool(_DNS_1123_LABEL.match(value))
