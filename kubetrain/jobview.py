"""What the cluster commands print, from stored TrainingJobs: pure functions of the object
(and the time, for ages), so the text a person reads is tested without a cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from kubetrain.api.v1alpha1 import default_task

Job = Mapping[str, Any]

TABLE_COLUMNS = ("NAME", "PHASE", "STAGE", "PROGRESS", "METRIC", "MODEL", "AGE")


def _status(job: Job) -> Mapping[str, Any]:
    return job.get("status") or {}


def age(created: str | None, now: datetime) -> str:
    """kubectl's short age: 45s, 12m, 3h, 5d."""
    if not created:
        return "<unknown>"
    then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table_row(job: Job, now: datetime) -> tuple[str, ...]:
    status, progress = _status(job), _status(job).get("progress") or {}
    percent = progress.get("percent")
    return (
        job["metadata"]["name"],
        status.get("phase") or "<new>",
        progress.get("stage") or "",
        "" if percent is None else f"{percent}%",
        status.get("keyMetric") or "",
        (job.get("spec") or {}).get("model", {}).get("type", ""),
        age(job["metadata"].get("creationTimestamp"), now),
    )


def table(jobs: Sequence[Job], now: datetime | None = None) -> str:
    """Aligned columns, like ``kubectl get`` (the CRD's printer columns plus the stage)."""
    now = now or datetime.now(timezone.utc)
    rows = [TABLE_COLUMNS, *(table_row(job, now) for job in jobs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    padded = (zip(row, widths, strict=True) for row in rows)
    return "\n".join("   ".join(cell.ljust(w) for cell, w in row).rstrip() for row in padded)


def _progress_parts(progress: Mapping[str, Any]) -> list[str]:
    parts = []
    if progress.get("stage"):
        parts.append(f"stage {progress['stage']}")
    if progress.get("epoch") is not None and progress.get("totalEpochs"):
        parts.append(f"epoch {progress['epoch']}/{progress['totalEpochs']}")
    if progress.get("percent") is not None:
        parts.append(f"{progress['percent']}%")
    if progress.get("samplesPerSecond"):
        parts.append(f"{progress['samplesPerSecond']:.0f} samples/s")
    if progress.get("etaSeconds"):
        parts.append(f"eta {progress['etaSeconds']}s")
    return parts


def _default_task(model_type: Any) -> str:
    """The task the API fills in for a spec that names none ("" for a type this kubetrain
    does not know: a job written by a newer one)."""
    try:
        return default_task(model_type)
    except (KeyError, TypeError):
        return ""


def describe(job: Job, events: Sequence[Mapping[str, Any]] = ()) -> str:
    """Conditions, data statistics, metrics, artifacts and events, readable."""
    meta, status = job["metadata"], _status(job)
    spec = job.get("spec") or {}
    model = spec.get("model") or {}
    task = model.get("task") or _default_task(model.get("type"))
    lines = [
        f"Name:        {meta['name']}",
        f"Namespace:   {meta.get('namespace', '')}",
        f"Model:       {model.get('type', '')} ({task})",
        f"Phase:       {status.get('phase') or '<new>'}"
        + (f" ({status['reason']})" if status.get("reason") else ""),
    ]
    if status.get("message"):
        lines.append(f"Message:     {status['message']}")
    for key, label in (("startTime", "Started:"), ("completionTime", "Completed:"),
                       ("attempts", "Attempts:"), ("rayClusterName", "Ray cluster:")):  # fmt: skip
        if status.get(key) is not None:
            lines.append(f"{label:<12} {status[key]}")
    lines += _section("Conditions", _conditions(status.get("conditions") or []))
    progress = _progress_parts(status.get("progress") or {})
    lines += _section("Progress", [", ".join(progress)] if progress else [])
    lines += _section("Data", _data_stats(status.get("dataStats") or {}))
    metrics = status.get("metrics") or {}
    lines += _section("Metrics", [f"{k} = {_number(v)}" for k, v in sorted(metrics.items())])
    lines += _section("Artifacts", _artifacts(status.get("artifacts") or {}))
    lines += _section("Events", [_event(e) for e in events])
    return "\n".join(lines)


def _section(title: str, body: Sequence[str]) -> list[str]:
    return [f"{title}:", *(f"  {line}" for line in body)] if body else []


def _conditions(conditions: Sequence[Mapping[str, Any]]) -> list[str]:
    return [
        f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".rstrip(
            ": "
        )
        for c in conditions
    ]


def _data_stats(stats: Mapping[str, Any]) -> list[str]:
    lines = [
        f"{label} {stats[key]}"
        for key, label in (("rowsRead", "rows read:"), ("rowsAfterCleaning", "after cleaning:"),
                           ("trainRows", "training rows:"), ("validationRows", "validation rows:"))
        if stats.get(key) is not None
    ]  # fmt: skip
    lines += [f"dropped by {d['rule']}: {d['dropped']}" for d in stats.get("droppedByRule") or []]
    classes = stats.get("classCounts") or {}
    if classes:
        shown = ", ".join(f"{name} {count}" for name, count in list(classes.items())[:12])
        lines.append(f"classes: {shown}" + (", ..." if len(classes) > 12 else ""))
    return (
        lines
        + _image_stats(stats.get("images") or {})
        + _series_stats(stats.get("sequences") or {})
    )


def _image_stats(images: Mapping[str, Any]) -> list[str]:
    if not images:
        return []
    lines = [f"image shape: {'x'.join(map(str, images.get('shape') or []))} (channels x h x w)"]
    sizes = images.get("sizesSeen") or []
    if sizes:
        seen = ", ".join(f"{s['size']} ({s['count']})" for s in sizes[:5])
        lines.append(f"sizes read: {seen} of {images.get('distinctSizes', len(sizes))} sizes")
    if images.get("channelMeans"):
        lines.append(f"channel means: {', '.join(f'{m:.3f}' for m in images['channelMeans'])}")
    bad = [f"{images[k]} {k}" for k in ("undecodable", "missing") if images.get(k)]
    if bad:
        lines.append(
            f"files dropped: {', '.join(bad)} (first: {', '.join(images.get('badFiles') or [])})"
        )
    return lines


def _series_stats(series: Mapping[str, Any]) -> list[str]:
    if not series:
        return []
    line = (
        f"series: {series.get('series')} (window {series.get('window')} x "
        f"{series.get('features')} features, longest {series.get('longestSeries')})"
    )
    if series.get("seriesDropped"):
        line += f", {series['seriesDropped']} too short for a window"
    return [line]


def _artifacts(artifacts: Mapping[str, Any]) -> list[str]:
    labels = (("outputUri", "outputs"), ("modelUri", "model"), ("metricsUri", "metrics"),
              ("reportUri", "data report"), ("logUri", "driver log"),
              ("logConfigMap", "saved log (configmap)"))  # fmt: skip
    lines = [f"{label}: {artifacts[key]}" for key, label in labels if artifacts.get(key)]
    lines += [f"plot: {plot}" for plot in artifacts.get("plots") or []]
    return lines


def _event(event: Mapping[str, Any]) -> str:
    count = event.get("count") or 1
    repeated = f" (x{count})" if count > 1 else ""
    head = f"{event.get('type', '')} {event.get('reason', '')}{repeated}"
    return f"{head}: {event.get('message', '')}"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
