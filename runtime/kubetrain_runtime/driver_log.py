"""The driver's own output, copied to the job's output location as it is printed, so that
the log outlives the Ray cluster (KubeRay users lose it with the head pod). On a local or
PVC path each line is appended at once, so a driver that is killed leaves what it wrote;
an object store cannot append, so the copy is uploaded when the driver ends."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import TextIO

from kubetrain_runtime.storage import Store

LOG_PATH = "logs/driver.log"


class _Tee(io.TextIOBase):
    """Writes to the original stream and to the copy; the copy never fails the driver."""

    def __init__(self, stream: TextIO, copy: TextIO) -> None:
        self.stream, self.copy = stream, copy

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        with contextlib.suppress(OSError, ValueError):
            self.copy.write(text)
            if "\n" in text:
                self.copy.flush()
        return written

    def flush(self) -> None:
        self.stream.flush()
        with contextlib.suppress(OSError, ValueError):
            self.copy.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


@contextlib.contextmanager
def copied_to(output_uri: str) -> Iterator[str | None]:
    """Tee stdout and stderr into ``<output>/logs/driver.log``; yields its URI, or None
    when the location cannot be written (the run goes on without a copy)."""
    store = Store(output_uri)
    buffer: io.StringIO | None = None
    try:
        if store.is_local:
            store.fs.makedirs(store.path("logs"), exist_ok=True)
            copy: TextIO = open(store.path(LOG_PATH), "a", encoding="utf-8")  # noqa: SIM115
        else:
            copy = buffer = io.StringIO()
    except OSError as exc:
        print(f"warning: the driver log is not copied to {output_uri}: {exc}", file=sys.stderr)
        yield None
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, copy), _Tee(err, copy)  # type: ignore[assignment]
    try:
        yield store.uri_of(LOG_PATH)
    finally:
        sys.stdout, sys.stderr = out, err
        with contextlib.suppress(OSError, ValueError):
            if buffer is not None:
                store.write_text(LOG_PATH, buffer.getvalue())
            copy.close()
