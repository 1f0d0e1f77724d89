"""The operator's config: file, command-line overrides, one-line errors naming the file and
the field; what the admin can get wrong is refused at load, never blamed on a job."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrain.errors import SpecError, UserError
from kubetrain_operator.__main__ import main
from kubetrain_operator.config import load_config
from kubetrain_operator.validation import resolve_placement

pytestmark = pytest.mark.unit


def test_overrides_apply_over_the_file(tmp_path: Path):
    file = tmp_path / "config.yaml"
    file.write_text("namespaces: [team-a]\nfollowIntervalSeconds: 2\n")
    config = load_config(file, {"namespaces": ["team-b"], "peeringName": "kubetrain"})
    assert config.namespaces == ["team-b"]
    assert (config.followIntervalSeconds, config.peeringName) == (2, "kubetrain")


@pytest.mark.parametrize("namespace", ["team-*", "Team-A", "-a"])
def test_namespaces_are_names_not_patterns(namespace: str):
    """Each watched namespace gets its own Role and pod watch: a pattern cannot."""
    with pytest.raises(UserError, match=r"namespaces\[0\]"):
        load_config(None, {"namespaces": [namespace]})


def test_a_missing_explicit_file_is_named(tmp_path: Path):
    with pytest.raises(UserError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(caught.value)


def test_the_process_refuses_a_bad_flag_with_one_line(capsys: pytest.CaptureFixture[str]):
    assert main(["-n", "team-*", "--liveness", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "namespaces[0]" in err and "\n" not in err


POOLS = """
nodePools:
  cpu: {nodeSelector: {kubetrain.io/pool: cpu}}
  a100:
    nodeSelector: {kubetrain.io/pool: a100}
    gpu: true
    gpuResource: nvidia.com/gpu
"""


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("defaultNodePool: gone", "defaultNodePool", "'gone' is not a key of nodePools"),
        ("defaultNodePool: A100", "defaultNodePool", "not a valid DNS label"),
        ("nodePools: {Big_Pool: {}}", "nodePools", "'Big_Pool' is not a valid DNS label"),
        (
            "nodePools: {cpu: {nodeSelector: {a/b/c: x}}}",
            "nodePools.cpu.nodeSelector",
            "'a/b/c' is not a valid label key",
        ),
        (
            "nodePools: {cpu: {nodeSelector: {zone: -b}}}",
            "nodePools.cpu.nodeSelector.zone",
            "'-b' is not a valid label value",
        ),
        ("nodePools: {g: {gpuResource: gpu}}", "nodePools.g.gpuResource", "a domain prefix"),
        (
            "nodePools: {g: {gpuResource: kubernetes.io/gpu}}",
            "nodePools.g.gpuResource",
            "outside kubernetes.io",
        ),
        ("imagePullSecrets: [ok, My_Secret]", "imagePullSecrets[1]", "not a valid DNS subdomain"),
        ("outputVolume: Shared", "outputVolume", "not a valid DNS subdomain"),
        ("peeringName: kube train", "peeringName", "not a valid DNS subdomain"),
        ("defaultImage: 'img:tag:extra'", "defaultImage", "not a valid image reference"),
        ("defaultImage: Registry/Img", "defaultImage", "not a valid image reference"),
    ],
)
def test_a_bad_file_is_named_with_the_field(tmp_path: Path, extra: str, field: str, words: str):
    file = tmp_path / "config.yaml"
    keeps_pools = extra.startswith("nodePools")
    file.write_text(f"{extra}\n" if keeps_pools else f"{POOLS}{extra}\n")
    with pytest.raises(UserError) as caught:
        load_config(file)
    message = str(caught.value)
    # A map key's error names the map (how it names the key is errors_of's business).
    assert message.startswith(f"{file}: invalid operator config: {field}")
    assert words in message and "\n" not in message


def test_the_default_pool_is_checked_against_the_pools_of_the_same_file(tmp_path: Path):
    file = tmp_path / "config.yaml"
    file.write_text(f"{POOLS}defaultNodePool: a100\n")
    assert load_config(file).defaultNodePool == "a100"
    file.write_text("defaultNodePool: a100\n")  # the built-in catalogue has only cpu
    with pytest.raises(UserError, match=r"defaultNodePool: 'a100' .*\(offered: cpu\)"):
        load_config(file)


def test_a_good_file_keeps_every_admin_field(tmp_path: Path):
    file = tmp_path / "config.yaml"
    file.write_text(
        f"{POOLS}defaultNodePool: cpu\ndefaultImage: registry.local:5000/kt/runtime:1.0\n"
        "imagePullSecrets: [regcred]\noutputVolume: team-runs\npeeringName: kubetrain\n"
    )
    config = load_config(file)
    assert config.nodePools["a100"].gpuResource == "nvidia.com/gpu"
    assert (config.defaultImage, config.imagePullSecrets, config.outputVolume) == (
        "registry.local:5000/kt/runtime:1.0",
        ["regcred"],
        "team-runs",
    )


def test_a_bad_override_is_blamed_on_the_command_line_not_the_file(tmp_path: Path):
    file = tmp_path / "config.yaml"
    file.write_text(f"{POOLS}outputVolume: Bad_Claim\n")
    with pytest.raises(UserError) as caught:
        load_config(file, {"peeringName": "Not A Name"})
    message = str(caught.value)
    assert f"{file}: invalid operator config: outputVolume: " in message
    assert "command line: invalid operator config: peeringName: " in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("nodePools: {cpu: [\n", "config.yaml:2", "invalid operator config"),
        ("- just\n- a list\n", "config.yaml", "must be a YAML mapping"),
    ],
)
def test_a_file_that_is_no_config_at_all_is_one_line(
    tmp_path: Path, text: str, where: str, words: str
):
    file = tmp_path / "config.yaml"
    file.write_text(text)
    with pytest.raises(UserError) as caught:
        load_config(file)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / where}: ") and words in message
    assert "\n" not in message


def test_the_process_refuses_a_bad_file_with_one_line_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    file = tmp_path / "config.yaml"
    file.write_text(f"{POOLS}defaultNodePool: gone\n")
    assert main(["--config", str(file), "--liveness", ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {file}: ")
    assert "defaultNodePool: 'gone' is not a key of nodePools" in err


# ------------------------------------------------- the default pool in a job's errors


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"training__resourcesPerWorker": {"gpu": 1}}, "spec.training.resourcesPerWorker.gpu"),
        ({"cluster__nodeSelector": {"kubetrain.io/pool": "h"}}, "spec.cluster.nodeSelector"),
    ],
)
def test_a_job_that_names_no_pool_is_told_the_pool_was_the_default(
    make_spec, make_config, overrides, field: str
):
    with pytest.raises(SpecError) as caught:
        resolve_placement(make_spec(**overrides), make_config(defaultNodePool="cpu"))
    assert caught.value.field is not None and caught.value.field.startswith(field)
    assert "the default node pool 'cpu' (the job names none)" in str(caught.value)


def test_the_default_pools_gpu_limit_is_said_to_be_the_defaults(make_spec, make_config):
    spec = make_spec(training__resourcesPerWorker={"gpu": 9})
    with pytest.raises(SpecError, match=r"nodes of the default pool 'a100' \(the job names none\)"):
        resolve_placement(spec, make_config(defaultNodePool="a100"))


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path):
    """YAML is read as helm and kubectl read it, except that half of a file is never lost."""
    file = tmp_path / "config.yaml"
    file.write_text("followIntervalSeconds: 5\nnodePools: {}\nfollowIntervalSeconds: 9\n")
    with pytest.raises(UserError) as caught:
        load_config(file)
    assert str(caught.value) == (
        f"{file}:3: invalid operator config: duplicate key 'followIntervalSeconds'"
    )
