"""Build kubetrain's operator and runtime images without Docker, from the project's own files.

The test machines have no Docker engine and no registry, so this makes what
``operator/Dockerfile`` and ``runtime/Dockerfile`` make, the same way, in three layers:

* base: a Debian rootfs from debootstrap (``--variant=minbase``, from this machine's apt
  mirror) with Debian's Python, :data:`BASE_PACKAGES` and the user 1000; both images share it;
* deps: the venv ``/opt/kubetrain`` with pyproject.toml's dependencies for the image's extra
  (torch, Ray, ... for the runtime; GBs), made by running ``ImageSpec.deps_steps``;
* project: kubetrain itself, installed from the sources (not editable), ``project_steps``.

The steps are the Dockerfiles' build-stage RUN lines word for word
(``tests/unit/test_images.py`` checks that), run chrooted into an overlay of the layers
below, with the project venv's uv cache bind-mounted so that torch is not downloaded again.
The layers are packed into an OCI archive (``e2e/oci.py``) for ``ctr -n k8s.io images import``.

Everything is cached under ``$KUBETRAIN_CACHE/images`` (default ``~/.cache/kubetrain``) by the
hash of its inputs: base by the release and package list; deps by pyproject.toml, the extra,
the variant and RECIPE; project by the package sources and these scripts on top. A rerun with
unchanged inputs only hashes (well under a second); a source edit rebuilds only the project
layer.

    e2e/build-images.sh [operator] [runtime] [--variant cuda|cpu] [--torch-index URL]
    e2e/build-images.sh --print-ref runtime      # the reference only, nothing built

The last stdout lines are the archive paths, one per image. Needs root (debootstrap, chroot,
mounts in a private mount namespace that vanish with the build).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oci

ROOT = Path(__file__).resolve().parent.parent
#: Bump when the recipe changes in a way the hashed inputs do not show.
RECIPE = 1

# ---------------------------------------------------------- what the images hold (= Dockerfiles)
DEBIAN_RELEASE = "bookworm"
#: Debian's python3 in bookworm; the Dockerfiles' default base is the same release.
PYTHON_MINOR = "3.11"
BASE_IMAGE = f"debian:{DEBIAN_RELEASE}-slim"
#: procps: ps/top/free for Ray's tooling and for debugging a pod.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "procps")
UID = GID = 1000
USER_NAME = "kubetrain"
HOME = f"/home/{USER_NAME}"
VENV = "/opt/kubetrain"
UV_VERSION = "0.13.9"
USER_SETUP = (
    f"groupadd --gid {GID} {USER_NAME} && useradd --uid {UID} --gid {GID} --create-home"
    f" --home-dir {HOME} --shell /bin/bash {USER_NAME}"
)
#: Installed from the project's pyproject.toml: its dependencies first (a Docker layer that
#: survives source edits), then the project itself (not editable). Bytecode is compiled in
#: (UV_COMPILE_BYTECODE): the venv is root's, so a pod (uid 1000) could not write it and
#: every one of Ray's worker processes would compile Ray and torch again. No pip in the venv
#: (uv installs; Ray's pip runtime_env seeds its own through virtualenv): 25 MB less.
VENV_STEP = f"python3 -m venv --without-pip {VENV}"
DEPS_STEP = f'uv pip install -r /src/pyproject.toml --extra "$EXTRA" && rm -f {VENV}/.lock'
PROJECT_STEP = (
    f'uv pip install "/src[$EXTRA]" && uv pip freeze > {VENV}/requirements.lock'
    f" && rm -f {VENV}/.lock"  # uv's lock file (world-writable) ends no layer
)
#: With TORCH_INDEX_URL set (the cpu variant), torch comes from that index and the later
#: steps keep it, as it satisfies pyproject.toml's `torch>=...`.
TORCH_STEP = (
    'if [ -n "$TORCH_INDEX_URL" ]; then uv pip install --index-url "$TORCH_INDEX_URL" torch; fi'
)
#: Test suites of big libraries that never import them at run time (~100 MB).
TRIM_STEP = (
    f"find {VENV} -depth -type d -name tests -path '*/site-packages/*/tests'"
    " \\( -path '*/pandas/*' -o -path '*/sklearn/*' -o -path '*/scipy/*'"
    " -o -path '*/numpy/*' -o -path '*/pyarrow/*' -o -path '*/matplotlib/*' \\)"
    " -exec rm -rf {} +"
)
#: The uv settings of the install steps (the Dockerfiles' build-stage ENV).
UV_ENV = {"UV_COMPILE_BYTECODE": "1", "UV_LINK_MODE": "copy", "UV_PYTHON_DOWNLOADS": "never"}
ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "VIRTUAL_ENV": VENV,
    "HOME": HOME,
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
}
#: What the base layer leaves out: docs, manuals, translations, apt's and dpkg's caches.
BASE_TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/cache/apt",
    "var/cache/debconf/templates.dat-old",
    "var/lib/apt/lists",
    "var/log",
)


@dataclass(frozen=True)
class ImageSpec:
    """One image: its extra of pyproject.toml, its Dockerfile and its runtime config."""

    name: str
    extra: str
    dockerfile: str
    deps_steps: tuple[str, ...]  # the deps layer: pyproject.toml's dependencies
    project_steps: tuple[str, ...]  # the project layer: kubetrain itself
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    variants: tuple[str, ...] = ("",)

    @property
    def steps(self) -> tuple[str, ...]:
        return self.deps_steps + self.project_steps


IMAGES = {
    "operator": ImageSpec(
        "operator",
        "operator",
        "operator/Dockerfile",
        deps_steps=(VENV_STEP, DEPS_STEP),
        project_steps=(PROJECT_STEP,),
        entrypoint=("python", "-m", "kubetrain_operator"),
    ),
    # No entrypoint: the operator's pods run `/bin/sh -c "exec ray start ..."`.
    "runtime": ImageSpec(
        "runtime",
        "runtime",
        "runtime/Dockerfile",
        deps_steps=(VENV_STEP, TORCH_STEP, DEPS_STEP, TRIM_STEP),
        project_steps=(PROJECT_STEP,),
        cmd=("/bin/bash",),
        variants=("cuda", "cpu"),
    ),
}
#: cuda: PyPI's torch (its CUDA libraries included; runs on CPU too). cpu: --torch-index.
DEFAULT_VARIANT = "cuda"
#: Where the package sources are, as hatch builds them (pyproject.toml's wheel packages).
SOURCES = ("pyproject.toml", "README.md", "kubetrain", "operator/kubetrain_operator",
           "runtime/kubetrain_runtime")  # fmt: skip
SCRIPTS = ("e2e/images.py", "e2e/oci.py")


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("KUBETRAIN_CACHE", Path.home() / ".cache/kubetrain"))


def project_version() -> str:
    """pyproject.toml's version (a regex: tomllib is 3.11+, the project supports 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    match = re.search(r'^version\s*=\s*"([^"]+)"', project, re.M)
    if not match:
        raise SystemExit("no [project] version in pyproject.toml")
    return match.group(1)


def image_ref(name: str, variant: str = "") -> str:
    """``localhost/kubetrain/operator:0.1.0``, ``localhost/kubetrain/runtime:0.1.0-cuda``."""
    spec = IMAGES[name]
    variant = variant or (DEFAULT_VARIANT if spec.variants != ("",) else "")
    tag = project_version() + (f"-{variant}" if variant else "")
    return f"localhost/kubetrain/{name}:{tag}"


def run(cmd: Sequence[str], **kwargs: object) -> None:
    log("$ " + " ".join(cmd)[:300])
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


# ---------------------------------------------------------------- hashing and caching


def _digest(parts: Sequence[bytes]) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(len(part).to_bytes(8, "big") + part)
    return sha.hexdigest()[:16]


def _files(top: Path) -> Iterator[Path]:
    if top.is_file():
        yield top
        return
    for path in sorted(top.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


def source_files() -> list[Path]:
    return [f for top in SOURCES for f in _files(ROOT / top)]


def base_key() -> str:
    recipe = [DEBIAN_RELEASE, *BASE_PACKAGES, USER_SETUP, *BASE_TRIM, f"recipe={RECIPE}"]
    return f"base-{DEBIAN_RELEASE}-" + _digest([s.encode() for s in recipe])


def _key(name: str, parts: list[bytes], files: Sequence[Path]) -> str:
    for path in files:
        parts += [path.relative_to(ROOT).as_posix().encode(), path.read_bytes()]
    return f"{name}-" + _digest(parts)


def _image_name(spec: ImageSpec, variant: str) -> str:
    return f"{spec.name}-{variant}" if variant else spec.name


def deps_key(spec: ImageSpec, variant: str, torch_index: str, base: str) -> str:
    """The deps layer: the base, what pyproject.toml installs for the extra, the torch
    source, the steps."""
    parts = [s.encode() for s in (base, spec.extra, variant, torch_index, *spec.deps_steps)]
    parts.append(f"recipe={RECIPE}".encode())  # not the scripts: an edit there costs GBs
    parts.append(install_inputs((ROOT / "pyproject.toml").read_text(), spec.extra))
    return f"{_image_name(spec, variant)}-deps-" + _digest(parts)


def install_inputs(pyproject: str, extra: str) -> bytes:
    """The parts of pyproject.toml that ``uv pip install -r pyproject.toml --extra EXTRA``
    reads: a test dependency or a lint rule must not rebuild GBs of torch and Ray."""
    import tomllib

    data = tomllib.loads(pyproject)
    project = data.get("project", {})
    optional = project.get("optional-dependencies", {})
    extras, todo = set(), [extra]
    while todo:  # extras that name others through the project itself (kubetrain[a,b])
        name = todo.pop()
        if name in extras or name not in optional:
            continue
        extras.add(name)
        for requirement in optional[name]:
            own = re.match(rf"{re.escape(project.get('name', ''))}\[([^\]]*)\]", requirement)
            todo += [e.strip() for e in own.group(1).split(",")] if own else []
    read = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "extras": {name: optional[name] for name in sorted(extras)},
        "uv": data.get("tool", {}).get("uv"),
    }
    return json.dumps(read, sort_keys=True).encode()


def app_key(spec: ImageSpec, variant: str, deps: str) -> str:
    """The project layer (and the image): the deps layer and every package source."""
    parts = [s.encode() for s in (deps, *spec.project_steps)]
    return _key(_image_name(spec, variant), parts, [*source_files(), *(ROOT / s for s in SCRIPTS)])


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """One builder per cache entry at a time (two shells, or two helpers, may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- the base layer


def debian_mirror(release: str = DEBIAN_RELEASE, apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for ``release`` (sources.list or deb822
    .sources files): images come from the same place as the host's packages."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if (
                    release in fields.get("Suites", "").split()
                    and "deb" in fields.get("Types", "").split()
                ):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
                if m and m.group(2) == release:
                    return m.group(1)
    raise SystemExit(f"no apt source for Debian {release} in /etc/apt: cannot debootstrap")


def ensure_debootstrap() -> None:
    if shutil.which("debootstrap"):
        return
    # Another agent may hold apt's lock: wait for it instead of failing.
    # A fresh machine may have no package lists yet.
    run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-qq"])
    run(["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=600", "debootstrap"])


def _mounts() -> list[str]:
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [line.split()[1].replace("\\040", " ") for line in lines]


def rmtree(path: Path) -> None:
    """shutil.rmtree, but never through a mount: deleting a tree with the host's /dev
    bound into it would delete the host's device nodes."""
    real = os.path.realpath(path)
    for target in _mounts():
        if target == real or target.startswith(real + "/"):
            raise SystemExit(f"{target} is mounted inside {path}: not deleting it")
    shutil.rmtree(path, ignore_errors=True)


#: A private /dev for the chroot (on a tmpfs): the host's /dev is never bound in.
PRIVATE_DEV = "\n".join(
    [f'mknod -m 666 "$M/dev/{name}" c {dev}' for name, dev in
     (("null", "1 3"), ("zero", "1 5"), ("full", "1 7"), ("random", "1 8"),
      ("urandom", "1 9"), ("tty", "5 0"))]
    + ['ln -s /proc/self/fd "$M/dev/fd"']
)  # fmt: skip


def in_namespace(script: str, **env: str) -> None:
    """Run a shell script in a private mount namespace: every mount it makes (proc, binds,
    overlay) disappears when it exits, even when it fails half-way."""
    run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-euc", script],
        env={**os.environ, **env})  # fmt: skip


def build_base(dest: Path) -> None:
    """debootstrap + Python + the user, trimmed; then the base layer tar."""
    ensure_debootstrap()
    tmp = dest.with_name(dest.name + ".tmp")
    rmtree(tmp)
    rootfs = tmp / "rootfs"
    rootfs.mkdir(parents=True)
    include = ",".join(BASE_PACKAGES)
    mirror = debian_mirror()
    in_namespace(
        'debootstrap --variant=minbase --include="$INCLUDE" "$RELEASE" "$ROOTFS" "$MIRROR"'
        ' >&2 && chroot "$ROOTFS" /bin/sh -euc "$USER_SETUP"',
        INCLUDE=include, RELEASE=DEBIAN_RELEASE, ROOTFS=str(rootfs), MIRROR=mirror,
        USER_SETUP=USER_SETUP,
    )  # fmt: skip
    trim_base(rootfs)
    oci.pack_layer(rootfs, tmp / "layer.tar", keep=_base_keep)
    (tmp / "meta.json").write_text(json.dumps({"mirror": mirror, "packages": include}) + "\n")
    tmp.replace(dest)


def trim_base(rootfs: Path) -> None:
    for rel in BASE_TRIM:
        path = rootfs / rel
        if path.is_dir():  # keep the directory (dpkg and apt expect it), drop what is in it
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    rmtree(child)
                else:
                    child.unlink()
    # The runtime mounts these per container; the build host's copies must not leak in.
    for name in ("etc/resolv.conf", "etc/hostname"):
        (rootfs / name).write_text("")


def _base_keep(rel: str) -> bool:
    """The mount points stay, their contents (the build's /proc, /dev, /tmp) do not."""
    top, _, rest = rel.partition("/")
    return not (rest and top in {"proc", "sys", "dev", "tmp", "run"})


# ---------------------------------------------------------------- the app layer


def stage_sources(dest: Path, *, project: bool) -> None:
    """Copy exactly the hashed inputs to a private tree that the chroot sees as /src: the
    package sources for the project layer, pyproject.toml alone for the deps layer."""
    for path in source_files() if project else [ROOT / "pyproject.toml"]:
        target = dest / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def uv_binary() -> Path:
    found = cache_dir() / "uv/bin/uv"
    if found.exists():
        return found
    which = shutil.which("uv")
    if not which:
        raise SystemExit("uv not found: run scripts/bootstrap.sh first (it installs uv)")
    return Path(which)


def host_ca_bundle() -> str:
    """The host's CA bundle (it may hold a proxy's CA that Debian's bundle lacks)."""
    return os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"


def passthrough_env() -> dict[str, str]:
    """Index and proxy settings of this machine, so the chroot's uv asks the same places."""
    keep = re.compile(
        r"^(UV_(INDEX|DEFAULT_INDEX|EXTRA_INDEX|HTTP_TIMEOUT)\w*|(HTTPS?|NO|ALL)_PROXY)$", re.I
    )
    return {k: v for k, v in os.environ.items() if keep.match(k)}


def install_script(spec: ImageSpec, steps: Sequence[str], torch_index: str) -> str:
    """The mounts, then ``steps`` chrooted into an overlay: $LOWER below (the layers so
    far), $UPPER above (the new layer). The uv cache, uv and the CA bundle are mounted in,
    on a tmpfs /tmp, so none of them lands in the layer."""
    env = {**passthrough_env(), **UV_ENV, "PATH": f"/tmp/uv:{ENV['PATH']}",
           "VIRTUAL_ENV": VENV, "HOME": "/root", "LANG": "C.UTF-8",
           "UV_CACHE_DIR": "/tmp/uv-cache", "SSL_CERT_FILE": "/tmp/ca.crt",
           "EXTRA": spec.extra, "TORCH_INDEX_URL": torch_index}  # fmt: skip
    exports = " ".join(f"{k}={_sh(v)}" for k, v in env.items())
    script = " && ".join(f"( {step} )" for step in steps)
    return f"""
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK" "$M"
mount -t proc proc "$M/proc"
mount -t tmpfs -o mode=755 tmpfs "$M/dev"
{PRIVATE_DEV}
mount -t tmpfs tmpfs "$M/tmp"
mkdir -p "$M/tmp/uv" "$M/tmp/uv-cache" "$M/src"
cp "$UV" "$M/tmp/uv/uv"
cp "$CA" "$M/tmp/ca.crt"
mount --bind "$UV_CACHE" "$M/tmp/uv-cache"
mount --bind "$SRC" "$M/src"
mount --bind /etc/resolv.conf "$M/etc/resolv.conf"
chroot "$M" /usr/bin/env -i {exports} /bin/sh -euc {_sh(script)} >&2
"""


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def build_layer(
    dest: Path, lowers: Sequence[Path], spec: ImageSpec, *, project: bool, torch_index: str
) -> None:
    """Run the deps or the project steps in an overlay over ``lowers`` (topmost first); the
    overlay's upper dir becomes ``dest/upper``, its tar ``dest/layer.tar`` (deletions as
    whiteouts)."""
    steps = spec.project_steps if project else spec.deps_steps
    tmp = dest.with_name(dest.name + ".tmp")
    rmtree(tmp)
    for sub in ("upper", "work", "merged", "src"):
        (tmp / sub).mkdir(parents=True)
    stage_sources(tmp / "src", project=project)
    uv_cache = Path(os.environ.get("UV_CACHE_DIR", cache_dir() / "uv-cache"))
    uv_cache.mkdir(parents=True, exist_ok=True)
    in_namespace(
        install_script(spec, steps, torch_index),
        LOWER=":".join(map(str, lowers)), UPPER=str(tmp / "upper"), WORK=str(tmp / "work"),
        M=str(tmp / "merged"), UV=str(uv_binary()), CA=host_ca_bundle(),
        UV_CACHE=str(uv_cache), SRC=str(tmp / "src"),
    )  # fmt: skip
    for sub in ("work", "merged", "src"):
        rmtree(tmp / sub)
    oci.pack_layer(tmp / "upper", tmp / "layer.tar", keep=_app_keep, overlay=True)
    tmp.replace(dest)


def _app_keep(rel: str) -> bool:
    """Only the venv: the overlay may also hold directories copied up on the way."""
    return rel == "opt" or rel == VENV.lstrip("/") or rel.startswith(VENV.lstrip("/") + "/")


# ---------------------------------------------------------------- images


def image_config(spec: ImageSpec) -> oci.ImageConfig:
    return oci.ImageConfig(
        entrypoint=spec.entrypoint, cmd=spec.cmd, env=dict(ENV), user=f"{UID}:{GID}",
        workdir=HOME,
    )  # fmt: skip


@dataclass(frozen=True)
class Built:
    ref: str
    archive: Path
    layers: tuple[Path, ...]  # the layers' trees, topmost first (an overlay's lowerdir)
    seconds: float
    cached: bool


def _variant(spec: ImageSpec, variant: str, torch_index: str) -> tuple[str, str]:
    if spec.variants == ("",):
        return "", ""
    variant = variant or DEFAULT_VARIANT
    if variant == "cpu" and not torch_index:
        raise SystemExit("the cpu variant needs --torch-index (PyTorch's CPU-only wheel index)")
    return variant, torch_index


def _ensure_layer(
    dest: Path, lowers: Sequence[Path], spec: ImageSpec, *, project: bool, torch_index: str
) -> None:
    with locked(dest.with_name(dest.name + ".lock")):
        if not dest.is_dir():  # complete once renamed from .tmp
            log(f"building the layer {dest.name}")
            build_layer(dest, lowers, spec, project=project, torch_index=torch_index)


def build(name: str, variant: str = "", torch_index: str = "", *, verify: bool = True) -> Built:
    """Build (or find in the cache) one image archive: base, deps and project layers."""
    spec = IMAGES[name]
    variant, torch_index = _variant(spec, variant, torch_index)
    started = time.monotonic()
    root = cache_dir() / "images"
    base = root / base_key()
    with locked(root / f"{base.name}.lock"):
        if not (base / "layer.tar").exists():
            log(f"building the base layer {base.name}")
            build_base(base)
    deps = root / deps_key(spec, variant, torch_index, base.name)
    _ensure_layer(deps, [base / "rootfs"], spec, project=False, torch_index=torch_index)
    app = root / app_key(spec, variant, deps.name)
    trees = (app / "upper", deps / "upper", base / "rootfs")
    archive = app / "image.tar"
    cached = archive.exists()
    _ensure_layer(app, trees[1:], spec, project=True, torch_index=torch_index)
    with locked(root / f"{app.name}.lock"):
        if not archive.exists():
            layers = [
                oci.layer_from_tar(base / "layer.tar"),
                deps_layer(deps),
                oci.layer_from_tar(app / "layer.tar"),
            ]
            if verify:  # before the archive exists: a failed check is not cached
                verify_image(name, trees)
            # Older builds go first (GBs each; a new deps layer and the old ones did not fit
            # on a disk with 25 GB free), all but the archive the deps blob is read from.
            prune(root, keep=(deps, app, layers[1].path.parent))
            oci.write_image(archive, image_ref(name, variant), layers, image_config(spec))
            keep_deps_in(deps, archive, layers[1])
            prune(root, keep=(deps, app))
    elapsed = time.monotonic() - started
    return Built(image_ref(name, variant), archive, trees, elapsed, cached)


#: Where the deps layer's blob lives once an archive holds it (its own tar is then deleted).
IN_ARCHIVE = "in-archive.json"


def deps_layer(deps: Path) -> oci.Layer:
    """The deps layer: its tar, else its blob in the last archive (a source edit reuses
    that GB-sized blob from there), else its tree packed again (that archive is gone)."""
    if (deps / "layer.tar").exists():
        return oci.layer_from_tar(deps / "layer.tar")
    try:
        where = json.loads((deps / IN_ARCHIVE).read_text())
        found = [lay for lay in oci.layers_in_archive(Path(where["archive"]))
                 if lay.digest == where["digest"]]  # fmt: skip
        if found:
            return found[0]
    except (OSError, ValueError, KeyError):
        pass
    log(f"packing {deps.name} again (the archive that held it is gone)")
    return oci.pack_layer(deps / "upper", deps / "layer.tar", keep=_app_keep, overlay=True)


def keep_deps_in(deps: Path, archive: Path, layer: oci.Layer) -> None:
    """Record that ``archive`` holds the deps blob and drop the separate tar: one copy of
    the GBs on disk instead of two."""
    tmp = deps / (IN_ARCHIVE + ".part")
    tmp.write_text(json.dumps({"archive": str(archive), "digest": layer.digest}) + "\n")
    tmp.replace(deps / IN_ARCHIVE)
    for name in ("layer.tar", "layer.tar.json"):
        (deps / name).unlink(missing_ok=True)


def prune(root: Path, keep: Sequence[Path]) -> None:
    """Drop finished older builds of the kinds in ``keep`` (image, variant and layer; GBs
    each), all but those in ``keep``."""
    kept = {path.resolve() for path in keep}
    kinds = {_kind(path) for path in keep}
    for other in sorted(root.iterdir()):
        done = other.is_dir() and not other.name.endswith(".tmp")  # not one in progress
        if done and _kind(other) in kinds and other.resolve() not in kept:
            log(f"removing the old build {other.name}")
            rmtree(other)
            Path(f"{other}.lock").unlink(missing_ok=True)


def _kind(build: Path) -> str:
    return build.name.rsplit("-", 1)[0]


# ---------------------------------------------------------------- checks

#: What each image must (and the operator's must not) import, run as the image's user.
CHECKS = {
    "operator": (
        "import kubetrain_operator.handlers, kopf, uvloop; import importlib.util as u;"
        " missing = [m for m in ('torch', 'ray') if u.find_spec(m)];"
        " assert not missing, f'{missing} must not be in the operator image'",
    ),
    "runtime": (
        "import ray, torch, kubetrain_runtime.job; print('torch', torch.__version__)",
        "ray --version",
    ),
}


def verify_image(name: str, trees: Sequence[Path]) -> None:
    """Run CHECKS as uid 1000 in a read-only overlay of the layers: the image's stack."""
    env = " ".join(f"{k}={_sh(v)}" for k, v in ENV.items())
    checks = [f"cd {HOME}"]
    checks += [f"python -c {_sh(c)}" if c.startswith("import") else c for c in CHECKS[name]]
    script = f"""
mount -t overlay overlay -o "lowerdir=$LOWER" "$M"
mount -t proc proc "$M/proc"
mount -t tmpfs tmpfs "$M/tmp"
chroot --userspec={UID}:{GID} "$M" /usr/bin/env -i {env} /bin/sh -euc {_sh(" && ".join(checks))} >&2
"""
    with tempfile.TemporaryDirectory(prefix="kubetrain-verify-") as merged:
        in_namespace(script, LOWER=":".join(map(str, trees)), M=merged)
    log(f"verified {name}: {'; '.join(CHECKS[name])}")


# ---------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-images.sh", description=__doc__.splitlines()[0])
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE", help="operator, runtime (default: both)"
    )
    parser.add_argument(
        "--variant",
        choices=("cuda", "cpu"),
        default=DEFAULT_VARIANT,
        help="runtime torch: cuda = PyPI's wheel, cpu = from --torch-index",
    )
    parser.add_argument(
        "--torch-index",
        default=os.environ.get("KUBETRAIN_TORCH_INDEX", ""),
        help="wheel index for torch, e.g. PyTorch's CPU-only index ($KUBETRAIN_TORCH_INDEX)",
    )
    parser.add_argument("--print-ref", action="store_true", help="print the refs, build nothing")
    parser.add_argument("--no-verify", action="store_true", help="skip the chroot import checks")
    args = parser.parse_args(argv)
    names = args.images or list(IMAGES)
    if unknown := sorted(set(names) - set(IMAGES)):
        parser.error(f"unknown image(s) {unknown}: choose from {list(IMAGES)}")
    if args.print_ref:
        for name in names:
            print(image_ref(name, args.variant if IMAGES[name].variants != ("",) else ""))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("needs root: debootstrap, chroot and mounts")
    built = [build(n, args.variant, args.torch_index, verify=not args.no_verify) for n in names]
    for b in built:
        size = b.archive.stat().st_size / 1e9
        state = "cached" if b.cached else "built"
        log(f"{b.ref}: {state} in {b.seconds:.1f} s, {size:.2f} GB, {b.archive}")
    for b in built:
        print(b.archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
