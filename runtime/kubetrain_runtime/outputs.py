"""The job's outputs, written through fsspec under the output URI.

model/model.pt           state dict of the final model
model/trainingjob.yaml   the TrainingJob it was trained from
model/plan.json          input shape, classes, features: what inference needs
model/preprocessor.pkl   the fitted Ray Data preprocessors (and label encoder)
metrics.json             per-epoch history, final and best values
data_report.json         rows read/cleaned/dropped per rule, split, per-column stats
plots/*.png              loss curves; confusion matrix; VAE samples/reconstructions;
                         predictions against truth (regression)
checkpoints/<name>/      Ray Train's checkpoints (resume)
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

from kubetrain.api import kubeyaml
from kubetrain.api.v1alpha1 import Artifacts, TrainingJob
from kubetrain_runtime.data.pipeline import PreparedData
from kubetrain_runtime.plan import KEY_METRIC, TrainPlan
from kubetrain_runtime.storage import Store
from kubetrain_runtime.train_loop import EXTRAS_FILE, MODEL_FILE, STATE_FILE, LoopState
from kubetrain_runtime.trainer import TrainOutcome


def _figure_bytes(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_losses(history: list[dict[str, float]], task: str) -> bytes:
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        if any(key in h for h in history):
            axes[0].plot(epochs, [h.get(key, math.nan) for h in history], marker="o", label=label)
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    key = KEY_METRIC.get(task, ("val_loss", "min"))[0]
    axes[1].plot(epochs, [h.get(key, math.nan) for h in history], marker="o", color="tab:green")
    axes[1].set(title=key, xlabel="epoch")
    for axis in axes:
        axis.grid(alpha=0.3)
    return _figure_bytes(figure)


def plot_confusion(matrix: list[list[int]], names: list[str]) -> bytes:
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.asarray(matrix)
    size = max(4.0, 0.5 * len(names) + 2)
    figure, axis = plt.subplots(figsize=(size, size * 0.85))
    image = axis.imshow(values, cmap="Blues")
    axis.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix (validation)",
    )
    axis.set_xticklabels(names, rotation=45, ha="right")
    axis.set_yticklabels(names)
    if len(names) <= 20:
        for (i, j), count in np.ndenumerate(values):
            color = "white" if count > values.max() / 2 else "black"
            axis.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _figure_bytes(figure)


def _image_of(vector: Any, shape: list[int] | None) -> tuple[Any, str | None]:
    """A flat sample as something ``imshow`` draws: grey or RGB with a known shape, else a
    square grey picture, else None (draw it as a line)."""
    import numpy as np

    if shape is not None and int(np.prod(shape)) == vector.size:
        channels, height, width = shape
        picture = vector.reshape(channels, height, width)
        if channels == 1:
            return picture[0], "gray"
        return np.clip(picture[:3].transpose(1, 2, 0), 0, 1), None
    side = math.isqrt(vector.size)
    if side * side == vector.size:
        return vector.reshape(side, side), "gray_r"
    return None, None


def plot_vae(extras: dict[str, Any], columns: int = 8, shape: list[int] | None = None) -> bytes:
    """A grid of generated samples, then rows of originals and their reconstructions:
    images (``shape``: ``[channels, height, width]``, or a square of grey), or line plots
    for sequences."""
    import matplotlib.pyplot as plt

    rows: list[tuple[str, Any]] = []
    samples = extras["samples"].numpy()
    for start in range(0, len(samples), columns):
        rows.append(("generated" if start == 0 else "", samples[start : start + columns]))
    if "originals" in extras and "reconstructions" in extras:
        rows.append(("original", extras["originals"].numpy()[:columns]))
        rows.append(("reconstruction", extras["reconstructions"].numpy()[:columns]))
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(1.2 * columns, 1.25 * len(rows)), squeeze=False
    )
    for axis in axes.flat:
        axis.set_axis_off()
    for row, (label, vectors) in enumerate(rows):
        for col, vector in enumerate(vectors):
            axis = axes[row][col]
            picture, cmap = _image_of(vector, shape)
            if picture is not None:
                top = 1.0 if shape is not None else max(1.0, float(vector.max()))
                axis.imshow(picture, cmap=cmap, vmin=0, vmax=top)
            else:
                axis.set_axis_on()
                axis.plot(vector, linewidth=0.8)
                axis.set_xticks([])
                axis.set_yticks([])
            if label and col == 0:
                axis.set_title(label, fontsize=7, loc="left")
    return _figure_bytes(figure)


def plot_predictions(extras: dict[str, Any], plan: TrainPlan, columns: int = 4) -> bytes:
    """Validation predictions against the truth (every forecast value); for sequences, also
    a few input windows with their true and predicted continuation."""
    import matplotlib.pyplot as plt
    import numpy as np

    truth, predicted = extras["truth"].numpy(), extras["predicted"].numpy()
    sequences = plan.model_type == "rnn"
    shown = min(columns, len(extras.get("inputs", []))) if sequences else 0
    figure, axes = plt.subplots(1, 1 + shown, figsize=(4 + 2.6 * shown, 3.6), squeeze=False)
    scatter = axes[0][0]
    scatter.scatter(truth.reshape(-1), predicted.reshape(-1), s=6, alpha=0.5)
    low, high = float(np.min(truth)), float(np.max(truth))
    scatter.plot([low, high], [low, high], color="tab:red", linewidth=1, label="y = x")
    scatter.set(title="validation: predicted vs true", xlabel="true", ylabel="predicted")
    scatter.legend(loc="upper left")
    scatter.grid(alpha=0.3)
    steps, features = plan.input_shape if len(plan.input_shape) == 2 else (0, 1)
    targets = (plan.input_transform or {}).get("targetFeatures") or [0]
    width = max(1, len(targets))
    for index in range(shown):
        axis = axes[0][1 + index]
        window = extras["inputs"][index].numpy().reshape(steps or -1, features)
        series = window[:, targets[0] if targets[0] < features else 0]
        true_next = truth[index].reshape(-1, width)[:, 0]
        predicted_next = predicted[index].reshape(-1, width)[:, 0]
        ahead = range(len(series), len(series) + len(true_next))
        axis.plot(range(len(series)), series, linewidth=1, label="input")
        axis.plot(ahead, true_next, color="black", marker=".", label="true")
        axis.plot(ahead, predicted_next, color="tab:orange", marker="x", label="predicted")
        axis.set(title=f"window {index + 1}", xticks=[])
        if index == 0:
            axis.legend(fontsize=7, loc="lower left")
    return _figure_bytes(figure)


def _summaries(history: list[dict[str, float]], task: str) -> dict[str, Any]:
    key, mode = KEY_METRIC.get(task, ("val_loss", "min"))
    scored = [h for h in history if key in h and not math.isnan(h[key])]
    best = (max if mode == "max" else min)(scored, key=lambda h: h[key]) if scored else None
    return {
        "keyMetric": key,
        "final": history[-1] if history else {},
        "best": {"epoch": best["epoch"], key: best[key]} if best else None,
    }


def _sample_quality(
    job: TrainingJob, plan: TrainPlan, prepared: PreparedData, model_file: Path
) -> dict[str, Any] | None:
    """The VAE's sample-quality figure (``quality``); None for other models or a custom
    loop's model, which need not be the built-in VAE."""
    if plan.model_type != "vae" or job.spec.training.trainFunction:
        return None
    import torch

    from kubetrain_runtime.quality import sample_quality

    return sample_quality(job, plan, prepared, torch.load(model_file, map_location="cpu"))


def write_outputs(
    store: Store,
    job: TrainingJob,
    plan: TrainPlan,
    prepared: PreparedData,
    outcome: TrainOutcome,
    *,
    resumed_from: int,
    timeline: dict[str, float] | None = None,
    timeline_origin: float | None = None,
) -> tuple[Artifacts, list[dict[str, float]]]:
    """Write everything; return the artifacts and the full history (resumed epochs too)."""
    artifacts = Artifacts(outputUri=store.uri)
    state: LoopState | None = None
    extras: dict[str, Any] = {}
    quality: dict[str, Any] | None = None
    if outcome.checkpoint is not None:
        with outcome.checkpoint.as_directory() as folder:
            root = Path(folder)
            if (root / MODEL_FILE).exists():
                artifacts.modelUri = store.write_bytes(
                    "model/model.pt", (root / MODEL_FILE).read_bytes()
                )
                quality = _sample_quality(job, plan, prepared, root / MODEL_FILE)
            if (root / STATE_FILE).exists():
                state = LoopState.load(root / STATE_FILE)
            if (root / EXTRAS_FILE).exists():
                import torch

                extras = torch.load(root / EXTRAS_FILE, map_location="cpu")
    body = job.model_dump(mode="json", exclude_none=True, exclude={"status"})
    store.write_text("model/trainingjob.yaml", kubeyaml.dump(body))
    store.write_json("model/plan.json", plan.to_dict())
    store.write_bytes(
        "model/preprocessor.pkl",
        pickle.dumps({"features": prepared.preprocessor, "label": prepared.label_encoder}),
    )

    history = state.history if state and state.history else outcome.history
    metrics = {
        "job": job.metadata.name,
        "task": plan.task,
        "epochs": plan.epochs,
        "resumedFromEpoch": resumed_from or None,
        "timelineSeconds": timeline or {},
        # When the timeline's zero was (Unix seconds), to line it up with other clocks.
        **({"timelineOriginUnix": round(timeline_origin, 3)} if timeline_origin else {}),
        "stoppedEarly": bool(state.stopped_early) if state else False,
        **_summaries(history, plan.task),
        **({"sampleQuality": quality} if quality else {}),
        "history": history,
    }
    artifacts.metricsUri = store.write_json("metrics.json", metrics)
    artifacts.reportUri = store.write_json("data_report.json", prepared.report)
    if job.spec.output.plots and history:
        artifacts.plots.append(store.write_bytes("plots/loss.png", plot_losses(history, plan.task)))
        if state and state.confusion and plan.class_names:
            artifacts.plots.append(
                store.write_bytes(
                    "plots/confusion_matrix.png", plot_confusion(state.confusion, plan.class_names)
                )
            )
        if "samples" in extras and len(extras["samples"]):
            figure = plot_vae(extras, shape=plan.image_shape)
            artifacts.plots.append(store.write_bytes("plots/vae_samples.png", figure))
        if "truth" in extras:
            figure = plot_predictions(extras, plan)
            artifacts.plots.append(store.write_bytes("plots/predictions.png", figure))
    artifacts.latestCheckpoint = outcome.last_checkpoint_uri
    artifacts.checkpointEpoch = outcome.last_checkpoint_epoch
    return artifacts, history
