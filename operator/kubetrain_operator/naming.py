"""Names and labels of a TrainingJob's children, in one place.

Every child name carries a fragment of the job's uid: a job deleted and recreated under
the same name gets fresh names, so a new pod never collides with an old one that is still
terminating (a bug dask-kubernetes users hit). TrainingJob names are at most 40
characters, so ``<name>-<uid5>-worker-1023`` stays within 63.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetrain.api.contract import head_service_name
from kubetrain.api.v1alpha1 import API_VERSION, GROUP, KIND

UID_FRAGMENT = 5
DASHBOARD_PORT = 8265
GCS_PORT = 6379
CLIENT_PORT = 10001
SPEC_FILE = "trainingjob.yaml"

LABEL_JOB = f"{GROUP}/job"
LABEL_JOB_UID = f"{GROUP}/job-uid"
LABEL_ROLE = f"{GROUP}/role"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
#: Hash of the pod's spec as built: a pod whose hash differs from the current build was made
#: from an older spec.cluster (or operator config), and is replaced while not running.
ANNOTATION_TEMPLATE = f"{GROUP}/pod-template-hash"
MANAGED_BY = "kubetrain-operator"

#: Kueue's plain-pod groups: a job labelled with a queue is admitted as one gang.
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_POD_GROUP = "kueue.x-k8s.io/pod-group-name"
KUEUE_GROUP_SIZE = "kueue.x-k8s.io/pod-group-total-count"

ROLE_HEAD = "head"
ROLE_WORKER = "worker"


@dataclass(frozen=True)
class JobRef:
    """The identity of one TrainingJob: enough to name, label and own its children."""

    name: str
    namespace: str
    uid: str
    #: The job's ``kueue.x-k8s.io/queue-name`` label: its pods then form a Kueue pod group.
    queue: str | None = None

    @property
    def cluster(self) -> str:
        """Name shared by the Ray cluster's objects (``status.rayClusterName``)."""
        return f"{self.name}-{self.uid[:UID_FRAGMENT].lower()}"

    @property
    def head_pod(self) -> str:
        return f"{self.cluster}-head"

    @property
    def head_service(self) -> str:
        return head_service_name(self.cluster)

    def worker_pod(self, index: int) -> str:
        return f"{self.cluster}-worker-{index}"

    @property
    def spec_config_map(self) -> str:
        return f"{self.cluster}-spec"

    @property
    def driver_log_config_map(self) -> str:
        """Where the driver's log outlives the Ray cluster (``status.artifacts``)."""
        return f"{self.cluster}-driver-log"

    @property
    def runtime_account(self) -> str:
        """ServiceAccount, Role and RoleBinding of the runtime share this name."""
        return f"{self.cluster}-runtime"

    def submission_id(self, attempt: int) -> str:
        """Ray submission id of an attempt: derived, never random, so that a resubmission
        after an operator restart hits Ray's 'already exists' instead of running twice."""
        return f"kubetrain-{self.uid}-{attempt}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.head_service}.{self.namespace}.svc:{DASHBOARD_PORT}"

    def owner_reference(self) -> dict[str, object]:
        """Makes the garbage collector delete every child with the job."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def labels(self, component: str) -> dict[str, str]:
        """Recommended ``app.kubernetes.io`` labels plus the job's own selectors."""
        return {
            "app.kubernetes.io/name": "kubetrain",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "kubetrain",
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_JOB: self.name,
            LABEL_JOB_UID: self.uid,
        }

    def selector(self) -> str:
        """Label selector of every child of this job (and only of this job)."""
        return f"{LABEL_JOB_UID}={self.uid}"
