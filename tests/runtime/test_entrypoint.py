"""The cluster entrypoint: JSON-lines events the operator parses, and one clear line plus
exit code 2 when the job is wrong. It joins the Ray this process already has."""

from __future__ import annotations

import json

import pytest
import yaml

from kubetrain.api.contract import parse_event
from kubetrain_runtime import entrypoint

pytestmark = pytest.mark.runtime


def write(job, path):
    path.write_text(yaml.safe_dump(job.model_dump(mode="json", exclude_none=True)))
    return path


def test_vae_through_the_entrypoint(ray_local, example, tmp_path, capsys):
    spec = write(example("digits-vae", training={"epochs": 3}), tmp_path / "job.yaml")
    out = tmp_path / "out"
    assert entrypoint.main(["--spec", str(spec), "--reporter", "log", "--output", str(out)]) == 0
    events = [e for e in map(parse_event, capsys.readouterr().out.splitlines()) if e]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "stage" and kinds[-1] == "finished"
    assert kinds.count("epoch") == 3
    epochs = [e for e in events if e["event"] == "epoch"]
    elbo = [e["metrics"]["val_elbo"] for e in epochs]
    assert elbo[-1] > elbo[0]
    assert epochs[-1]["progress"] == {
        "stage": "training",
        "epoch": 3,
        "totalEpochs": 3,
        "percent": 100,
        "samplesPerSecond": pytest.approx(epochs[-1]["metrics"]["samples_per_second"]),
        "etaSeconds": 0,
    }
    done = events[-1]
    assert done["succeeded"] is True
    assert done["artifacts"]["modelUri"] == str(out / "model" / "model.pt")
    assert any(p.endswith("vae_samples.png") for p in done["artifacts"]["plots"])
    assert (out / "plots" / "vae_samples.png").stat().st_size > 1000
    plan = json.loads((out / "model" / "plan.json").read_text())
    assert plan["likelihood"] == "bernoulli" and plan["num_features"] == 64


def test_a_wrong_job_exits_2_with_one_line(ray_local, example, tmp_path, capsys):
    job = example("iris-csv-mlp", data={"source": {"uri": {"path": str(tmp_path / "missing.csv")}}})
    spec = write(job, tmp_path / "job.yaml")
    assert (
        entrypoint.main(
            ["--spec", str(spec), "--reporter", "log", "--output", str(tmp_path / "out")]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"error: {tmp_path / 'missing.csv'}: no such file or directory (spec.data.source.uri.path)"
    ]
    finished = [
        e for e in map(parse_event, captured.out.splitlines()) if e and e["event"] == "finished"
    ]
    assert (
        finished and finished[0]["succeeded"] is False and "missing.csv" in finished[0]["message"]
    )


def test_unknown_reporter_is_a_user_error(tmp_path, example, capsys):
    spec = write(example("digits-vae"), tmp_path / "job.yaml")
    assert entrypoint.main(["--spec", str(spec), "--reporter", "fancy"]) == 2
    assert "unknown reporter 'fancy'" in capsys.readouterr().err
