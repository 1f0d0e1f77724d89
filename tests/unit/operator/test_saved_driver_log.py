"""The driver log outlives the Ray cluster: saved before the head pod is deleted, once,
into a ConfigMap the job owns, and cut to what a ConfigMap holds."""

from __future__ import annotations

import pytest
from test_status import actions_of, cluster_pods, observe, running

from kubetrain_operator import builders
from kubetrain_operator.actions import DeletePods, SaveDriverLog
from kubetrain_operator.observe import FinalReport, RayJobState
from kubetrain_operator.status import decide

pytestmark = pytest.mark.unit


def finished(job, spec, **status):
    final = FinalReport({"val_accuracy": 0.9}, "val_accuracy=0.9", {})
    ray = RayJobState("SUCCEEDED", final=final)
    return observe(job, spec, running(job, **status), cluster_pods(job, spec), ray)


def test_the_log_is_saved_before_the_head_is_deleted_and_status_names_it(job, make_spec):
    plan = decide(finished(job, make_spec()))
    save = actions_of(plan, SaveDriverLog)
    assert save == [SaveDriverLog(job.submission_id(1))]
    assert plan.actions.index(save[0]) < plan.actions.index(actions_of(plan, DeletePods)[0])
    assert plan.status.artifacts.logConfigMap == job.driver_log_config_map


def test_a_kept_head_keeps_its_log_and_a_saved_log_is_not_saved_again(job, make_spec):
    kept = decide(finished(job, make_spec(runPolicy__cleanupPolicy="KeepHead")))
    assert actions_of(kept, SaveDriverLog) == []
    saved = {"artifacts": {"logConfigMap": job.driver_log_config_map}}
    again = decide(finished(job, make_spec(), **saved))
    assert actions_of(again, SaveDriverLog) == []


def test_the_config_map_keeps_the_end_of_a_long_log_owned_by_the_job(job):
    short = builders.driver_log_config_map(job, "line\n")
    assert short["data"] == {"driver.log": "line\n"}
    assert short["metadata"]["ownerReferences"][0]["uid"] == job.uid
    long_log = "é" * builders.DRIVER_LOG_LIMIT + "the end\n"
    cut = builders.driver_log_config_map(job, long_log)["data"]["driver.log"]
    assert cut.startswith("[... the first ") and cut.endswith("the end\n")
    assert len(cut.encode()) <= builders.DRIVER_LOG_LIMIT + 100
