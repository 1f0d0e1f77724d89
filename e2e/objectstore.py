"""A real S3-compatible object store for the tests: versitygw (a maintained S3 gateway that
serves a local folder), built from the Go module proxy by ``e2e/build-tools.sh versitygw``
and run as one process. Stdlib only, like ``localcluster.py``, so any tier can start it.

The store has a root identity (which creates buckets) and can add users that own only the
buckets given to them, so that "access denied" is the server's own verdict, not a fake.

    store = ObjectStore.start(Path("/tmp/s3"), host="0.0.0.0")
    store.create_user("team-a", "secret-a", buckets=["team-a-data"])
    ...
    store.stop()
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "e2e" / "build-tools.sh"
BINARY = "versitygw"


def binary() -> Path:
    """The versitygw binary: in ``$KUBETRAIN_BIN_DIR`` when the test script built the tools,
    else built (or found) by build-tools.sh."""
    explicit = os.environ.get("KUBETRAIN_BIN_DIR")
    if explicit and (Path(explicit) / BINARY).is_file():
        return Path(explicit) / BINARY
    built = (
        subprocess.run([str(BUILD_SCRIPT), BINARY], check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    return Path(built) / BINARY


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class ObjectStore:
    """A running versitygw: its endpoint, its root credentials and its process."""

    root: Path
    port: int
    bind: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    admin_port: int
    users: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, root: Path, *, host: str = "127.0.0.1", timeout: float = 20.0) -> ObjectStore:
        """Serve ``root/data`` as S3 on ``host`` (``0.0.0.0`` lets pods reach it)."""
        data, iam = root / "data", root / "iam"
        for folder in (data, iam):
            folder.mkdir(parents=True, exist_ok=True)
        port, admin = free_port(), free_port()
        access, secret = "kubetrain-root", secrets.token_hex(16)
        log = (root / "versitygw.log").open("ab")
        process = subprocess.Popen(
            [str(binary()), "--access", access, "--secret", secret,
             "--port", f"{host}:{port}", "--admin-port", f"127.0.0.1:{admin}",
             "--iam-dir", str(iam), "--quiet", "posix", str(data)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        store = cls(root, port, host, access, secret, process, admin)
        deadline = time.monotonic() + timeout
        while not (_answers("127.0.0.1", port) and _answers("127.0.0.1", admin)):
            if process.poll() is not None or time.monotonic() > deadline:
                store.stop()
                tail = (root / "versitygw.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"versitygw did not start on port {port}:\n{tail}")
            time.sleep(0.05)
        return store

    @property
    def endpoint(self) -> str:
        """The S3 endpoint from this machine."""
        return f"http://127.0.0.1:{self.port}"

    def endpoint_for(self, address: str) -> str:
        """The endpoint as another host (a pod) reaches it, through ``address``."""
        return f"http://{address}:{self.port}"

    def admin(self, *args: str) -> str:
        out = subprocess.run(
            [str(binary()), "admin", "--access", self.access_key, "--secret", self.secret_key,
             "--endpoint-url", f"http://127.0.0.1:{self.admin_port}", *args],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return out.stdout

    def create_bucket(self, bucket: str, owner: str | None = None) -> None:
        """A bucket owned by the root, or by ``owner`` (a user made by ``create_user``)."""
        self.admin("create-bucket", "--bucket", bucket, "--owner", owner or self.access_key)

    def create_user(self, access_key: str, secret_key: str, buckets: list[str] = ()) -> None:
        """A plain user that may use only the buckets it owns (``buckets`` are created)."""
        self.admin("create-user", "--access", access_key, "--secret", secret_key, "--role", "user")
        self.users[access_key] = secret_key
        for bucket in buckets:
            self.create_bucket(bucket, owner=access_key)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
