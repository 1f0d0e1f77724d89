"""The pod store (watch events → per-job PodStates, who is told) and the stream decoder."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fake_api import start_fake_api

from kubetrain_operator.kube import KubeApi
from kubetrain_operator.naming import LABEL_JOB_UID
from kubetrain_operator.observe import summarize_pod
from kubetrain_operator.podwatch import PodStore, PodWatch, decode_event, json_lines

pytestmark = pytest.mark.unit


def pod(name: str, uid: str = "u1", namespace: str = "ns", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_JOB_UID: uid}},
        "spec": {},
        "status": status,
    }


def recording_store() -> tuple[PodStore, list[str]]:
    told: list[str] = []
    return PodStore(on_change=told.append), told


def test_events_build_each_jobs_view_and_tell_only_that_job():
    store, told = recording_store()
    assert store.apply("ADDED", pod("a-head"))
    assert store.apply("ADDED", pod("b-head", uid="u2"))
    assert [p.name for p in store.get("u1")] == ["a-head"]
    assert told == ["u1", "u2"]

    assert store.apply("MODIFIED", pod("a-head", phase="Running"))
    assert store.get("u1")[0].phase == "Running"
    assert told[-1] == "u1"


def test_a_change_no_decision_looks_at_tells_nobody():
    store, told = recording_store()
    store.apply("ADDED", pod("a-head", phase="Running"))
    # e.g. a new podIP or a kubelet heartbeat: the summary is the same
    unchanged = pod("a-head", phase="Running", podIP="10.0.0.7")
    assert not store.apply("MODIFIED", unchanged)
    assert told == ["u1"]


def test_deleting_the_last_pod_forgets_the_job():
    store, told = recording_store()
    store.apply("ADDED", pod("a-head"))
    assert store.apply("DELETED", pod("a-head"))
    assert store.get("u1") == ()
    assert store.by_job == {} and store.namespace_of == {}
    assert not store.apply("DELETED", pod("a-head")), "a second delete changes nothing"
    assert told == ["u1", "u1"]


def test_pods_of_no_job_are_ignored():
    store, told = recording_store()
    foreign = {"metadata": {"name": "x", "namespace": "ns", "labels": {}}, "status": {}}
    assert not store.apply("ADDED", foreign)
    assert store.by_job == {} and told == []


def test_a_relist_tells_exactly_the_jobs_whose_view_changed():
    store, told = recording_store()
    store.apply("ADDED", pod("a-head"))  # u1: unchanged by the relist
    store.apply("ADDED", pod("b-head", uid="u2"))  # u2: deleted while disconnected
    store.apply("ADDED", pod("c-head", uid="u3"))  # u3: became Running meanwhile
    told.clear()
    store.replace([pod("a-head"), pod("c-head", uid="u3", phase="Running"), pod("d", uid="u4")])
    assert sorted(told) == ["u2", "u3", "u4"]
    assert store.get("u2") == ()
    assert store.get("u3")[0].phase == "Running"


def test_a_relist_of_one_namespace_keeps_the_others():
    store, told = recording_store()
    store.apply("ADDED", pod("a-head", namespace="one"))
    store.apply("ADDED", pod("b-head", uid="u2", namespace="two"))
    told.clear()
    store.replace([], namespace="one")
    assert store.get("u1") == () and told == ["u1"]
    assert [p.name for p in store.get("u2")] == ["b-head"]


async def chunks_of(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def decode(parts: list[bytes]) -> list[Any]:
    async def collect() -> list[Any]:
        return [event async for event in json_lines(chunks_of(parts))]

    return asyncio.run(collect())


def test_json_lines_reassembles_lines_across_chunks_of_any_size():
    big = b'{"type":"ADDED","object":{"data":"' + b"x" * 200_000 + b'"}}'
    stream = b'{"a":1}\n\n' + big + b'\n{"b":2}'
    for size in (1, 7, 4096, len(stream)):
        parts = [stream[i : i + size] for i in range(0, len(stream), size)]
        events = decode(parts)
        assert [e.get("a") or e.get("b") or len(e["object"]["data"]) for e in events] == [
            1,
            200_000,
            2,
        ], size


FAILING_POD = {
    "metadata": {
        "name": "j-head", "namespace": "ns", "resourceVersion": "42",
        "creationTimestamp": "2026-11-29T00:00:00Z", "deletionTimestamp": None,
        "labels": {LABEL_JOB_UID: "u1", "kubetrain.io/role": "head"},
        "annotations": {"kubetrain.io/pod-template-hash": "abc"},
        "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
    },
    "spec": {"nodeName": "n1", "containers": [{"name": "ray-head", "image": "x", "env": []}]},
    "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "lastProbeTime": None}],
        "containerStatuses": [{
            "name": "ray-head", "restartCount": 4, "lastState": {},
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        }],
    },
}  # fmt: skip


@pytest.mark.parametrize(
    "obj",
    [
        FAILING_POD,
        {**FAILING_POD, "status": {"phase": "Failed", "containerStatuses": [
            {"name": "c", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}},
        {**FAILING_POD, "spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]}},
    ],
)  # fmt: skip
def test_the_slim_decoder_keeps_everything_the_summary_reads(obj: dict[str, Any]):
    line = json.dumps({"type": "MODIFIED", "object": obj}).encode()
    event = decode_event(line)
    assert summarize_pod(event["object"]) == summarize_pod(json.loads(line)["object"])
    assert "managedFields" not in event["object"]["metadata"]  # skipped, never built


def test_the_slim_decoder_reads_error_events_and_never_drops_an_odd_one():
    error = {"kind": "Status", "status": "Failure", "code": 410, "message": "too old"}
    assert (
        decode_event(json.dumps({"type": "ERROR", "object": error}).encode())["object"]["code"]
        == 410
    )
    odd = {"type": "MODIFIED", "object": {"metadata": {"name": 7, "labels": {}}}}
    assert decode_event(json.dumps(odd).encode()) == odd  # wrong type: decoded in full


def test_followers_wake_on_a_new_job_version_or_a_pod_change_only():
    from kubetrain_operator.lifecycle import Followers

    async def scenario() -> None:
        followers = Followers()
        body = {"metadata": {"uid": "u1", "resourceVersion": "10"}}
        wake = followers.add("u1", body)
        followers.tick()
        assert not wake.is_set(), "nothing changed"
        body["metadata"]["resourceVersion"] = "11"  # kopf updates its live body in place
        followers.tick()
        assert wake.is_set()
        wake.clear()
        followers.wake("u1")  # the pod store's callback
        assert wake.is_set()
        followers.wake("unknown")  # pods of a job nobody follows: ignored
        followers.remove("u1", asyncio.Event())  # a stale daemon's remove keeps the new one
        wake.clear()
        followers.wake("u1")
        assert wake.is_set()
        followers.remove("u1", wake)
        body["metadata"]["resourceVersion"] = "12"
        followers.tick()  # no longer followed: nothing to wake, no error

    asyncio.run(scenario())


# ------------------------------------------------- the watch loop, against a fake server


def test_the_watch_resumes_from_its_version_and_lists_again_when_expired():
    """List (v1) → watch from v1: an event, then the stream ends → watch again from the
    event's version → ERROR 410 → list again (the pod is gone meanwhile) → watch."""
    requests: list[dict[str, str]] = []
    lists = [
        {"metadata": {"resourceVersion": "1"}, "items": [pod("a-head")]},
        {"metadata": {"resourceVersion": "9"}, "items": []},
    ]
    running = pod("a-head", phase="Running")
    running["metadata"]["resourceVersion"] = "5"
    streams = [
        [{"type": "ADDED", "object": pod("b-head", uid="u2")},
         {"type": "MODIFIED", "object": running}],
        [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}}],
        [{"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}],
    ]  # fmt: skip

    async def handler(request: web.Request) -> web.StreamResponse:
        requests.append(dict(request.query))
        if "watch" not in request.query:
            return web.json_response(lists.pop(0) if lists else {"metadata": {}, "items": []})
        response = web.StreamResponse()
        await response.prepare(request)
        for event in streams.pop(0) if streams else []:
            await response.write(json.dumps(event).encode() + b"\n")
        if not streams and not lists:
            await finished.wait()  # the last watch stays open
        return response

    finished = asyncio.Event()

    async def scenario() -> None:
        runner, base = await start_fake_api(handler, "/api/v1/namespaces/ns/pods", "GET")
        told: list[str] = []
        async with aiohttp.ClientSession() as session:
            api = KubeApi(base, session)
            watch = PodWatch(lambda: api, "sel=1", ["ns"], PodStore(on_change=told.append))
            watch.start()
            try:
                await asyncio.wait_for(watch.synced.wait(), 5)
                for _ in range(200):
                    if len(requests) >= 5:
                        break
                    await asyncio.sleep(0.02)
            finally:
                finished.set()
                await watch.stop()
                await runner.cleanup()
        versions = [(("watch" in q), q.get("resourceVersion")) for q in requests[:5]]
        assert versions == [(False, None), (True, "1"), (True, "5"), (True, "7"), (False, None)]
        assert all(q["labelSelector"] == "sel=1" for q in requests)
        assert watch.store.get("u1") == (), "the relist shows a-head gone"
        assert [p.name for p in watch.store.get("u2")] == [], "and b-head too"
        assert "u1" in told and "u2" in told

    asyncio.run(scenario())
