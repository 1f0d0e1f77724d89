"""OCI image archives from plain directories or layer tars, with the standard library only.

No registry is reachable on the test machines and no Docker engine can build there, so images
are packed by hand: each layer is a tar of a directory (or an existing tar), and the archive is
an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/…``) plus Docker's
``manifest.json``, so the same file loads with ``ctr -n k8s.io images import``,
``docker load`` and ``kind load image-archive``.

Usage from Python::

    from oci import ImageConfig, pack_layer, write_image
    layer = pack_layer(Path("rootfs"), Path("layer.tar"))
    write_image(Path("pause.tar"), "localhost/kubetrain/pause:1", [layer],
                ImageConfig(entrypoint=["/pause"], user="65535:65535"))

or from a shell::

    python3 e2e/oci.py --ref localhost/kubetrain/pause:1 --entrypoint /pause \\
        --layer DIR_OR_TAR [--layer ...] -o pause.tar
    python3 e2e/oci.py --check pause.tar      # validate an archive (digests, sizes, refs)

A later layer deletes a file of an earlier one only through a whiteout (``.wh.<name>``), which
:func:`pack_layer` writes for the deletions of an overlayfs upper dir (``overlay=True``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import stat
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
#: containerd names an imported image after this annotation (``ctr images import``).
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20

#: Path filter for :func:`pack_layer`: True keeps the entry (its path relative to the root).
PathFilter = Callable[[str], bool]


@dataclass(frozen=True)
class Layer:
    """A layer blob on disk: ``size`` bytes of ``path`` from ``offset`` (0 for a layer tar,
    more for a blob inside an image archive, see :func:`layers_in_archive`). ``digest``
    names the blob, ``diff_id`` its uncompressed tar (the same for an uncompressed layer)."""

    path: Path
    digest: str
    diff_id: str
    size: int
    media_type: str = MEDIA_LAYER
    offset: int = 0

    def save_meta(self) -> None:
        """Write ``<tar>.json`` so that a cached layer is not hashed again (GBs for torch)."""
        meta = asdict(self) | {"path": self.path.name}
        _meta_path(self.path).write_text(json.dumps(meta, indent=1) + "\n")


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config (what a Dockerfile's ENTRYPOINT, CMD, ENV, USER,
    WORKDIR and LABEL set)."""

    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: Sequence[str] = ()  # "8080/tcp"

    def to_json(self) -> dict[str, Any]:
        config: dict[str, Any] = {"Env": [f"{k}={v}" for k, v in self.env.items()]}
        if self.entrypoint:
            config["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            config["Cmd"] = list(self.cmd)
        if self.user:
            config["User"] = self.user
        if self.workdir:
            config["WorkingDir"] = self.workdir
        if self.labels:
            config["Labels"] = dict(self.labels)
        if self.exposed_ports:
            config["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        return config


class _HashingWriter(io.RawIOBase):
    """Passes writes through to a file while hashing and counting them: a multi-GB layer
    is written once and never read back to compute its digest."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.sink.write(view)
        self.size += len(view)
        return len(view)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _meta_path(tar: Path) -> Path:
    return tar.with_name(tar.name + ".json")


def _walk(root: Path, keep: PathFilter) -> Iterator[tuple[Path, str]]:
    """Every entry under root in sorted order (stable layer digests), parents first; a
    directory that the filter drops is not descended into."""
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        rel_base = base.relative_to(root).as_posix()
        kept_dirs = []
        for name in sorted(dirnames):
            rel = name if rel_base == "." else f"{rel_base}/{name}"
            if keep(rel):
                kept_dirs.append(name)
                yield base / name, rel
        dirnames[:] = kept_dirs  # os.walk descends only into these, in this order
        for name in sorted(filenames):
            rel = name if rel_base == "." else f"{rel_base}/{name}"
            if keep(rel):
                yield base / name, rel


def _keep_all(_rel: str) -> bool:
    return True


def _whiteout(tar: tarfile.TarFile, rel: str) -> None:
    """An OCI whiteout: the file ``.wh.<name>`` deletes ``name`` from the layers below."""
    parent, _, name = rel.rpartition("/")
    info = tarfile.TarInfo(f"{parent}/.wh.{name}" if parent else f".wh.{name}")
    info.mode = 0o644
    tar.addfile(info)


def _is_opaque(path: Path) -> bool:
    """overlayfs marks a directory that replaced a lower one (its old entries hidden)."""
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _add_tree(tar: tarfile.TarFile, root: Path, keep: PathFilter, overlay: bool) -> None:
    for path, rel in _walk(root, keep):
        st = os.lstat(path)
        if overlay and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            _whiteout(tar, rel)  # overlayfs's deletion mark in an upper dir
            continue
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            continue  # /dev is the runtime's; sockets cannot be archived
        info = tar.gettarinfo(str(path), arcname=rel)
        info.uname = info.gname = ""  # numeric owners only, as image tools expect
        if info.isreg():
            with path.open("rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)
        if overlay and info.isdir() and _is_opaque(path):
            _whiteout(tar, f"{rel}/.wh..opq")  # → <dir>/.wh..wh..opq: hide what is below


def pack_layer(
    root: Path,
    out: Path,
    *,
    keep: PathFilter = _keep_all,
    compress: bool = False,
    overlay: bool = False,
) -> Layer:
    """Tar the tree under ``root`` (owners, modes, mtimes and hard links kept; device nodes
    and sockets skipped) into ``out`` and return its digests. ``keep`` filters paths
    relative to root. ``compress`` gzips the blob: smaller to copy, slower to write (gzip
    runs at about 30-60 MB/s on one core), and ``ctr import`` accepts either. ``overlay``:
    root is an overlayfs upper dir, whose deletions and opaque dirs become OCI whiteouts."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tmp.open("wb") as sink:
        blob = _HashingWriter(sink)
        gz = gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=1, mtime=0) if compress else None
        raw = _HashingWriter(gz) if gz else blob  # type: ignore[arg-type]
        with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_tree(tar, root, keep, overlay)
        if gz:
            gz.close()
    tmp.replace(out)
    layer = Layer(
        path=out,
        digest=blob.digest,
        diff_id=raw.digest,
        size=blob.size,
        media_type=MEDIA_LAYER_GZIP if compress else MEDIA_LAYER,
    )
    layer.save_meta()
    return layer


def _hash_file(path: Path, *, gunzip: bool = False) -> str:
    sha = hashlib.sha256()
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def layer_from_tar(path: Path) -> Layer:
    """A layer for an existing tar (plain or gzipped), from its ``<tar>.json`` sidecar when
    that still matches the file's size, else hashed."""
    meta = _meta_path(path)
    if meta.exists():
        data = json.loads(meta.read_text())
        if data.get("size") == path.stat().st_size:
            return Layer(**(data | {"path": path}))
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    digest = _hash_file(path)
    layer = Layer(
        path=path,
        digest=digest,
        diff_id=_hash_file(path, gunzip=True) if gzipped else digest,
        size=path.stat().st_size,
        media_type=MEDIA_LAYER_GZIP if gzipped else MEDIA_LAYER,
    )
    layer.save_meta()
    return layer


def oci_platform() -> dict[str, str]:
    """This machine's platform in OCI words (x86_64 → amd64, aarch64 → arm64)."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    return {"architecture": arch.get(machine, machine), "os": "linux"}


def _json_blob(obj: object) -> bytes:
    return json.dumps(obj, indent=None, separators=(",", ":"), sort_keys=True).encode()


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def blob_name(digest: str) -> str:
    algo, _, hexa = digest.partition(":")
    return f"blobs/{algo}/{hexa}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def tag_of(ref: str) -> str:
    """The tag of ``host/repo:tag`` (``latest`` when absent); a port is not a tag."""
    name = ref.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[1] if ":" in name else "latest"


def image_documents(
    ref: str, layers: Sequence[Layer], config: ImageConfig, *, created: str | None = None
) -> tuple[bytes, bytes, bytes, dict[str, Any]]:
    """The config blob, the manifest blob, index.json and Docker's manifest.json entry."""
    plat = oci_platform()
    config_doc: dict[str, Any] = {
        **plat,
        "config": config.to_json(),
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"kubetrain e2e/oci.py: {lay.path.name}"} for lay in layers],
    }
    if created:
        config_doc["created"] = created
    config_blob = _json_blob(config_doc)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": _descriptor(MEDIA_CONFIG, config_blob),
        "layers": [
            {"mediaType": lay.media_type, "digest": lay.digest, "size": lay.size} for lay in layers
        ],
    }
    manifest_blob = _json_blob(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            _descriptor(MEDIA_MANIFEST, manifest_blob)
            | {
                "platform": plat,
                "annotations": {ANNOTATION_CONTAINERD_NAME: ref, ANNOTATION_REF_NAME: tag_of(ref)},
            }
        ],
    }
    docker_entry = {
        "Config": blob_name(manifest["config"]["digest"]),
        "RepoTags": [ref],
        "Layers": [blob_name(lay.digest) for lay in layers],
    }
    return config_blob, manifest_blob, _json_blob(index), docker_entry


def write_image(
    out: Path,
    ref: str,
    layers: Sequence[Layer],
    config: ImageConfig,
    *,
    created: str | None = None,
) -> Path:
    """Write an image archive (OCI layout + Docker's manifest.json) for ``ref`` (a full
    reference such as ``localhost/kubetrain/operator:0.1.0``). Written to a temp name and
    renamed, so a crash never leaves a half archive under ``out``."""
    config_blob, manifest_blob, index_blob, docker_entry = image_documents(
        ref, layers, config, created=created
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", _json_blob({"imageLayoutVersion": "1.0.0"}))
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        seen: set[str] = set()
        for layer in layers:
            if layer.digest in seen:  # the same layer twice: one blob
                continue
            seen.add(layer.digest)
            info = tarfile.TarInfo(blob_name(layer.digest))
            info.size = layer.size
            info.mode = 0o644
            with layer.path.open("rb") as f:
                f.seek(layer.offset)
                tar.addfile(info, f)  # copies exactly info.size bytes
        for blob in (config_blob, manifest_blob):
            _add_bytes(tar, blob_name("sha256:" + hashlib.sha256(blob).hexdigest()), blob)
        _add_bytes(tar, "index.json", index_blob)
        _add_bytes(tar, "manifest.json", _json_blob([docker_entry]))
    tmp.replace(out)
    return out


def as_layer(source: Path, workdir: Path) -> Layer:
    """A directory is packed into ``workdir``; a tar file is used as it is."""
    if source.is_dir():
        return pack_layer(source, workdir / f"{source.name}.tar")
    return layer_from_tar(source)


def layers_in_archive(path: Path) -> list[Layer]:
    """The layers of an archive written by :func:`write_image`, pointing into it: a new
    image can reuse a big layer from an old archive without a separate copy on disk."""
    with tarfile.open(path, "r:") as tar:
        index = json.loads(_member_bytes(tar, "index.json"))
        manifest = json.loads(_member_bytes(tar, blob_name(index["manifests"][0]["digest"])))
        config = json.loads(_member_bytes(tar, blob_name(manifest["config"]["digest"])))
        layers = []
        for desc, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
            member = tar.getmember(blob_name(desc["digest"]))
            layers.append(
                Layer(path, desc["digest"], diff_id, desc["size"], desc["mediaType"],
                      member.offset_data)
            )  # fmt: skip
    return layers


# ------------------------------------------------------------------ checks


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    if member is None:
        raise ValueError(f"{name}: not a regular file")
    return member.read()


def _check_blob(tar: tarfile.TarFile, desc: dict[str, Any], *, read: bool = True) -> bytes:
    name = blob_name(desc["digest"])
    info = tar.getmember(name)
    if info.size != desc["size"]:
        raise ValueError(f"{name}: size {info.size}, descriptor says {desc['size']}")
    if not read:
        return b""
    data = _member_bytes(tar, name)
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != desc["digest"]:
        raise ValueError(f"{name}: digest {actual}, descriptor says {desc['digest']}")
    return data


def _check_layer_digest(tar: tarfile.TarFile, desc: dict[str, Any]) -> None:
    member = tar.extractfile(blob_name(desc["digest"]))
    assert member is not None
    sha = hashlib.sha256()
    while chunk := member.read(CHUNK):
        sha.update(chunk)
    if "sha256:" + sha.hexdigest() != desc["digest"]:
        raise ValueError(f"layer {desc['digest']}: content does not match its digest")


def check_archive(path: Path, *, hash_layers: bool = True) -> dict[str, Any]:
    """Validate an archive written by :func:`write_image` (index → manifest → config and
    layers: digests and sizes, diff_id count, the containerd name) and return a summary:
    ref, config (the runtime config), layers (sizes). ``hash_layers=False`` skips re-hashing
    the layer blobs (seconds per GB)."""
    with tarfile.open(path, "r:") as tar:
        json.loads(_member_bytes(tar, "oci-layout"))
        index = json.loads(_member_bytes(tar, "index.json"))
        if index.get("schemaVersion") != 2 or len(index.get("manifests", ())) != 1:
            raise ValueError("index.json: expected schemaVersion 2 and one manifest")
        mdesc = index["manifests"][0]
        manifest = json.loads(_check_blob(tar, mdesc))
        config = json.loads(_check_blob(tar, manifest["config"]))
        for desc in manifest["layers"]:
            _check_blob(tar, desc, read=False)
            if hash_layers:
                _check_layer_digest(tar, desc)
        if len(config["rootfs"]["diff_ids"]) != len(manifest["layers"]):
            raise ValueError("config: diff_ids and manifest layers differ in number")
        docker = json.loads(_member_bytes(tar, "manifest.json"))
        ref = mdesc.get("annotations", {}).get(ANNOTATION_CONTAINERD_NAME)
        if not ref or docker[0]["RepoTags"] != [ref]:
            raise ValueError("index.json and manifest.json name different images")
    return {
        "ref": ref,
        "config": config["config"],
        "platform": {k: config[k] for k in ("architecture", "os")},
        "layers": [desc["size"] for desc in manifest["layers"]],
    }


# ------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oci.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="ARCHIVE", type=Path, help="validate an archive")
    parser.add_argument("--ref", help="full image reference, e.g. localhost/kubetrain/pause:1")
    parser.add_argument("--layer", action="append", type=Path, default=[], help="dir or tar")
    parser.add_argument("--entrypoint", action="append", default=[], help="repeat per argv item")
    parser.add_argument("--cmd", action="append", default=[], help="repeat per argv item")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE")
    parser.add_argument("--user", default="")
    parser.add_argument("--workdir", default="")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    if args.check:
        print(json.dumps(check_archive(args.check), indent=1))
        return 0
    if not (args.ref and args.layer and args.output):
        parser.error("--ref, --layer and -o are required (or --check ARCHIVE)")
    work = args.output.with_name(args.output.name + ".layers")
    layers = [as_layer(source, work) for source in args.layer]
    env = dict(item.split("=", 1) for item in args.env)
    config = ImageConfig(args.entrypoint, args.cmd, env, args.user, args.workdir)
    print(write_image(args.output, args.ref, layers, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
