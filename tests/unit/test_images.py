"""The Dockerfiles and e2e/images.py (the Docker-free build) must make the same images; and
e2e/oci.py must write archives that image tools accept. No Docker, root or network needed."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "e2e"))

import images  # noqa: E402
import localcluster  # noqa: E402
import oci  # noqa: E402

pytestmark = pytest.mark.unit

Instruction = tuple[str, str]


def parse_dockerfile(path: Path) -> dict[str, list[Instruction]]:
    """Stage name → its instructions (continuations joined, whitespace collapsed); the
    last stage is also under "final"."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: dict[str, list[Instruction]] = {"": []}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, args = line.partition(" ")
        args = " ".join(args.split())
        if op.upper() == "FROM":
            words = args.split()
            current = words[2] if len(words) == 3 and words[1].upper() == "AS" else "final"
            stages[current] = []
        stages[current].append((op.upper(), args))
    return stages


def args_of(stage: list[Instruction], op: str) -> list[str]:
    return [args for name, args in stage if name == op]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    return dict(item.split("=", 1) for args in args_of(stage, "ENV") for item in args.split())


def build_args(stages: dict[str, list[Instruction]]) -> dict[str, str]:
    return dict(
        a.split("=", 1) for stage in stages.values() for a in args_of(stage, "ARG") if "=" in a
    )


def collapse(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(params=sorted(images.IMAGES))
def spec(request: pytest.FixtureRequest) -> images.ImageSpec:
    return images.IMAGES[request.param]


@pytest.fixture
def stages(spec: images.ImageSpec) -> dict[str, list[Instruction]]:
    return parse_dockerfile(ROOT / spec.dockerfile)


def test_base_image_and_python(stages):
    assert build_args(stages)["BASE_IMAGE"] == images.BASE_IMAGE
    assert images.BASE_IMAGE.startswith(f"debian:{images.DEBIAN_RELEASE}")
    # Debian's python3 per release: the base's Python is the one the wheels are made for.
    assert {"bookworm": "3.11", "trixie": "3.13"}[images.DEBIAN_RELEASE] == images.PYTHON_MINOR
    assert args_of(stages["base"], "FROM") == ["${BASE_IMAGE} AS base"]


def test_base_packages(stages):
    (apt,) = [r for r in args_of(stages["base"], "RUN") if "apt-get install" in r]
    packages = apt.split("--no-install-recommends")[1].split("&&")[0].split()
    assert tuple(packages) == images.BASE_PACKAGES


def test_user_env_workdir(spec, stages):
    assert images.USER_SETUP in args_of(stages["base"], "RUN")
    assert env_of(stages["base"]) == images.ENV
    final = stages["final"]
    assert args_of(final, "FROM") == ["base"]
    assert args_of(final, "USER") == [f"{images.UID}:{images.GID}"]
    assert args_of(final, "WORKDIR") == [images.HOME]
    assert args_of(final, "COPY") == [f"--from=build {images.VENV} {images.VENV}"]
    assert images.image_config(spec).env == images.ENV


def test_entrypoint_and_cmd(spec, stages):
    final = stages["final"]
    assert [json.loads(a) for a in args_of(final, "ENTRYPOINT")] == (
        [list(spec.entrypoint)] if spec.entrypoint else []
    )
    assert [json.loads(a) for a in args_of(final, "CMD")] == ([list(spec.cmd)] if spec.cmd else [])


def test_install_steps_match(spec, stages):
    build = stages["build"]
    runs = [r for r in args_of(build, "RUN") if "/opt/uv" not in r]  # uv's own bootstrap
    assert runs == [collapse(step) for step in spec.steps]
    assert build_args(stages)["EXTRA"] == spec.extra
    env = env_of(build)
    assert {k: env[k] for k in images.UV_ENV} == images.UV_ENV


def test_uv_version_matches_bootstrap(stages):
    assert build_args(stages)["UV_VERSION"] == images.UV_VERSION
    bootstrap = (ROOT / "scripts/bootstrap.sh").read_text()
    assert f'"uv=={images.UV_VERSION}"' in bootstrap  # the local build runs that uv


def test_sources_copied_and_not_ignored(stages):
    copied = {c for a in args_of(stages["build"], "COPY") for c in a.split()[:-1]}
    assert copied == set(images.SOURCES)
    ignore = (ROOT / ".dockerignore").read_text().split()
    for source in images.SOURCES:
        assert f"!{source}" in ignore or f"!{source}/" in ignore


def test_extras_exist_and_operator_has_no_training_stack():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for spec in images.IMAGES.values():
        assert spec.extra in extras
    names = {re.split(r"[\[<>=~! ]", r)[0] for r in extras["operator"]}
    assert not names & {"torch", "ray"}


def test_refs():
    version = images.project_version()
    assert images.image_ref("operator") == f"localhost/kubetrain/operator:{version}"
    assert images.image_ref("runtime") == f"localhost/kubetrain/runtime:{version}-cuda"
    assert images.image_ref("runtime", "cpu") == f"localhost/kubetrain/runtime:{version}-cpu"


def test_debian_mirror_from_apt_config(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert images.debian_mirror("bookworm", tmp_path) == "http://mirror.invalid/debian"
    sources_list = "deb [arch=amd64] http://other.invalid/d bookworm main\n"
    (tmp_path / "sources.list").write_text(sources_list)
    assert images.debian_mirror("bookworm", tmp_path) == "http://other.invalid/d"
    with pytest.raises(SystemExit):
        images.debian_mirror("trixie", tmp_path)


def test_keys_follow_their_inputs(tmp_path, monkeypatch):
    for rel in images.SOURCES:
        path = tmp_path / rel
        if rel == "pyproject.toml":
            path.write_text('[project]\nname = "k"\ndependencies = []\n')
        elif "." in rel:
            path.write_text("x")
        else:
            (path / "__pycache__").mkdir(parents=True)
            (path / "__init__.py").write_text("")
    for rel in images.SCRIPTS:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("")
    monkeypatch.setattr(images, "ROOT", tmp_path)
    spec = images.IMAGES["runtime"]
    deps = images.deps_key(spec, "cuda", "", "base-x")
    app = images.app_key(spec, "cuda", deps)
    assert images.deps_key(spec, "cpu", "idx", "base-x") != deps
    assert images.deps_key(spec, "cuda", "", "base-y") != deps
    (tmp_path / "kubetrain" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    assert images.app_key(spec, "cuda", deps) == app  # bytecode is not an input
    (tmp_path / "kubetrain" / "__init__.py").write_text("# edited")
    assert images.deps_key(spec, "cuda", "", "base-x") == deps  # a source edit: deps stay
    assert images.app_key(spec, "cuda", deps) != app
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "k"\ndependencies = ["y"]\n')
    assert images.deps_key(spec, "cuda", "", "base-x") != deps
    assert deps.startswith("runtime-cuda-deps-") and app.startswith("runtime-cuda-")


def test_base_keep_drops_mount_point_contents():
    assert images._base_keep("proc") and images._base_keep("tmp") and images._base_keep("usr/bin")
    assert not images._base_keep("proc/1") and not images._base_keep("dev/null")
    assert images._app_keep("opt/kubetrain/bin/python") and images._app_keep("opt")
    assert not images._app_keep("src/pyproject.toml") and not images._app_keep("etc")


def test_rmtree_refuses_a_tree_with_a_mount_inside(tmp_path, monkeypatch):
    (tmp_path / "rootfs" / "dev").mkdir(parents=True)
    monkeypatch.setattr(images, "_mounts", lambda: ["/", str(tmp_path / "rootfs" / "dev")])
    with pytest.raises(SystemExit, match="mounted inside"):
        images.rmtree(tmp_path / "rootfs")
    assert (tmp_path / "rootfs" / "dev").is_dir()
    monkeypatch.setattr(images, "_mounts", lambda: ["/"])
    images.rmtree(tmp_path / "rootfs")
    assert not (tmp_path / "rootfs").exists()


def test_chroot_gets_a_private_dev():
    spec = images.IMAGES["runtime"]
    script = images.install_script(spec, spec.deps_steps, "")
    assert "--rbind /dev" not in script and "--bind /dev" not in script
    assert 'mount -t tmpfs -o mode=755 tmpfs "$M/dev"' in script


# ------------------------------------------------------------------ oci.py


def make_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (root / "bin" / "hello").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "a").write_text("a")
    (root / "etc" / "b").hardlink_to(root / "etc" / "a")
    (root / "etc" / "c").symlink_to("a")
    return root


@pytest.mark.parametrize("compress", [False, True])
def test_archive_layout_and_digests(tmp_path, compress):
    layer = oci.pack_layer(make_tree(tmp_path / "root"), tmp_path / "l.tar", compress=compress)
    config = oci.ImageConfig(
        entrypoint=["/bin/hello"], env={"A": "b"}, user="1000:1000", workdir="/home/x"
    )
    ref = "localhost/kubetrain/test:1"
    archive = oci.write_image(tmp_path / "img.tar", ref, [layer, layer], config)
    summary = oci.check_archive(archive)
    assert summary["ref"] == ref
    assert summary["config"] == {
        "Entrypoint": ["/bin/hello"],
        "Env": ["A=b"],
        "User": "1000:1000",
        "WorkingDir": "/home/x",
    }
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))
        docker = json.load(tar.extractfile("manifest.json"))
    assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
    assert len([n for n in names if n.startswith("blobs/sha256/")]) == 3  # layer once, 2 docs
    assert index["manifests"][0]["annotations"][oci.ANNOTATION_REF_NAME] == "1"
    assert docker[0]["RepoTags"] == [ref]
    assert oci.layer_from_tar(layer.path) == layer  # from the sidecar
    layer.path.with_name(layer.path.name + ".json").unlink()
    assert oci.layer_from_tar(layer.path) == layer  # hashed again: the same digests


def test_layer_keeps_links_owners_and_skips_filtered(tmp_path):
    root = make_tree(tmp_path / "root")
    layer = oci.pack_layer(root, tmp_path / "l.tar", keep=lambda rel: not rel.startswith("bin"))
    with tarfile.open(layer.path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"etc", "etc/a", "etc/b", "etc/c"}
    assert members["etc/b"].islnk() and members["etc/b"].linkname == "etc/a"
    assert members["etc/c"].issym() and members["etc/c"].linkname == "a"
    assert all(m.uname == "" for m in members.values())


def test_check_archive_rejects_a_wrong_digest(tmp_path):
    layer = oci.pack_layer(make_tree(tmp_path / "root"), tmp_path / "l.tar")
    bad = oci.Layer(layer.path, "sha256:" + "0" * 64, layer.diff_id, layer.size)
    archive = oci.write_image(tmp_path / "img.tar", "localhost/x:1", [bad], oci.ImageConfig())
    with pytest.raises((ValueError, KeyError)):
        oci.check_archive(archive)


def test_tag_of():
    assert oci.tag_of("localhost/kubetrain/runtime:0.1.0-cpu") == "0.1.0-cpu"
    assert oci.tag_of("localhost:5000/x") == "latest"


def test_overlay_deletions_become_whiteouts(tmp_path):
    upper = tmp_path / "upper"
    (upper / "opt" / "gone-dir").mkdir(parents=True)
    try:
        os.mknod(upper / "opt" / "gone", stat.S_IFCHR | 0o000, 0)  # overlayfs's deletion mark
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    try:
        os.setxattr(upper / "opt" / "gone-dir", "trusted.overlay.opaque", b"y")
        opaque = True
    except OSError:
        opaque = False  # trusted.* xattrs need root and a filesystem that has them
    layer = oci.pack_layer(upper, tmp_path / "l.tar", overlay=True)
    with tarfile.open(layer.path) as tar:
        names = set(tar.getnames())
    assert "opt/.wh.gone" in names and "opt/gone" not in names
    assert ("opt/gone-dir/.wh..wh..opq" in names) == opaque


def test_deps_blob_is_reused_from_the_archive_then_repacked(tmp_path):
    deps = tmp_path / "runtime-cuda-deps-1"
    make_tree(deps / "upper" / "opt" / "kubetrain")
    packed = oci.pack_layer(deps / "upper", deps / "layer.tar", keep=images._app_keep, overlay=True)
    assert images.deps_layer(deps) == packed
    first = oci.write_image(
        tmp_path / "a" / "image.tar", "localhost/x:1", [packed], oci.ImageConfig()
    )
    images.keep_deps_in(deps, first, packed)
    assert not (deps / "layer.tar").exists()  # one copy on disk: the archive's
    inside = images.deps_layer(deps)
    assert (inside.path, inside.digest, inside.diff_id) == (first, packed.digest, packed.diff_id)
    assert inside.offset > 0
    second = oci.write_image(
        tmp_path / "b" / "image.tar", "localhost/x:2", [inside], oci.ImageConfig()
    )
    oci.check_archive(second)  # the blob copied from inside the first archive is intact
    first.unlink()
    assert images.deps_layer(deps).digest == packed.digest  # packed again: the same bytes


def _two_layer_archive(tmp_path: Path) -> tuple[Path, list[str]]:
    layers = []
    for name, text in (("deps", "torch"), ("project", "kubetrain")):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.txt").write_text(text)
        layers.append(oci.pack_layer(tmp_path / name, tmp_path / f"{name}.tar"))
    archive = oci.write_image(tmp_path / "image.tar", "localhost/x:1", layers, oci.ImageConfig())
    return archive, [layer.digest for layer in layers]


def test_an_import_leaves_out_only_the_layers_the_node_has(tmp_path: Path):
    archive, (deps, _) = _two_layer_archive(tmp_path)
    thin = tmp_path / "thin.tar"
    assert localcluster.thin_archive(archive, {deps, "sha256:unrelated"}, thin) == 1
    with tarfile.open(archive) as full, tarfile.open(thin) as kept:
        left_out = set(full.getnames()) - set(kept.getnames())
        assert left_out == {"blobs/sha256/" + deps.split(":")[1]}
        assert kept.extractfile("index.json").read() == full.extractfile("index.json").read()


def test_an_import_with_no_layer_on_the_node_is_the_archive_itself(tmp_path: Path):
    archive, _ = _two_layer_archive(tmp_path)
    assert localcluster.thin_archive(archive, {"sha256:unrelated"}, tmp_path / "thin.tar") == 0
    assert not (tmp_path / "thin.tar").exists()


PYPROJECT = """
[project]
name = "kubetrain"
requires-python = ">=3.10"
dependencies = ["pydantic>=2"]
[project.optional-dependencies]
runtime = ["torch>=2.4"]
dev = ["pytest>=8"]
gpu = ["kubetrain[runtime]", "nvidia-ml-py"]
[tool.ruff]
line-length = 100
"""


def test_the_deps_layer_changes_only_with_what_its_extra_installs():
    key = images.install_inputs
    newer_torch = PYPROJECT.replace("torch>=2.4", "torch>=2.5")
    unrelated = PYPROJECT.replace('"pytest>=8"', '"pytest>=8", "pytest-xdist"').replace("100", "99")
    assert key(PYPROJECT, "runtime") == key(unrelated, "runtime"), "a test dep rebuilt torch"
    assert key(PYPROJECT, "runtime") != key(newer_torch, "runtime")
    assert key(PYPROJECT, "runtime") != key(PYPROJECT.replace('>=2"', '>=3"'), "runtime")
    # An extra that names another through the project itself installs both.
    assert key(PYPROJECT, "gpu") != key(newer_torch, "gpu")


def test_prune_drops_older_builds_of_the_kept_kinds_only(tmp_path):
    names = "runtime-cuda-aaa runtime-cuda-bbb runtime-cuda-ccc runtime-cuda-ddd.tmp"
    names = [*names.split(), "runtime-cuda-deps-xxx", "runtime-cuda-deps-yyy", "base-b-1", "op-1"]
    for name in names:
        (tmp_path / name).mkdir()
    # The new app and deps builds, and the old archive that still holds the deps blob.
    keep = [tmp_path / n for n in ("runtime-cuda-bbb", "runtime-cuda-deps-xxx", "runtime-cuda-aaa")]
    images.prune(tmp_path, keep)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(set(names) - {"runtime-cuda-ccc", "runtime-cuda-deps-yyy"})
