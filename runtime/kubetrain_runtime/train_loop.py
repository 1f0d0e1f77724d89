"""The per-worker training loop, run by every Ray Train worker.

Each worker reads its shard (split on the driver, see ``SHARDS_KEY``), trains a replica
(DDP when there is more than one worker), and all-reduces sums of loss, correct
predictions and counts, so that the metrics it reports are those of the whole data, not of
rank 0's shard. Every epoch is reported (``ray.train.report`` is a barrier); every
``checkpoint_every`` epochs, and at the end, rank 0 attaches a checkpoint that holds enough
to resume at the next epoch.

A custom ``spec.training.trainFunction`` replaces ``train_loop_per_worker``: it is called
as ``fn(config)`` with ``config["plan"]`` the TrainPlan as a dict, reads the shards
``"train"`` and ``"validation"`` (columns ``x``: float32 features, ``y``: the label), and
reports with ``ray.train.report``; a ``model.pt`` state dict in its last checkpoint becomes
the job's model. ``build_model(TrainPlan.from_dict(config["plan"]))`` gives the built-in
model for the plan.

The same loop also runs in Ray Train's local mode (``num_workers=0``: the function runs in
the driver, which is how ``kubetrain run`` trains by default). That mode keeps only the
last report in memory, so there the loop stores its checkpoints itself, in the layout that
Ray Train uses, and tells the driver of each epoch directly (``InProcessReports``).
"""

from __future__ import annotations

import json
import math
import posixpath
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kubetrain_runtime import transforms
from kubetrain_runtime.models import build_model
from kubetrain_runtime.plan import TrainPlan, learning_rate
from kubetrain_runtime.storage import Store
from kubetrain_runtime.transforms import InputTransform

STATE_FILE = "state.json"
MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
EXTRAS_FILE = "extras.pt"
#: Reconstructions shown next to their originals in the VAE plot.
RECONSTRUCTIONS = 8
#: Slots of the per-phase sums vector that is all-reduced across workers.
_LOSS, _COUNT, _CORRECT, _SQUARED, _ABSOLUTE, _RECON, _KL = range(7)
#: ``train_loop_config`` keys set by the driver (beside ``plan``).
OUTPUT_KEY = "output"  # the output store's URI (checkpoints under checkpoints/<run>/)
RESUME_KEY = "resume_from"  # the checkpoint the driver chose to resume (its folder name)
IN_PROCESS_KEY = "events"  # local mode: the driver's events file
#: The built-in loop's data: {"train": [shard per rank], "validation": [...]}, split on the
#: driver. Without it (a custom loop) the shards come from ``ray.train.get_dataset_shard``.
SHARDS_KEY = "shards"
#: Checkpoints live under ``<output>/checkpoints/<run>/``, one folder per saved epoch.
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint_epoch_"
#: Ray Train's own record of a run's checkpoints, in the run's folder.
RAY_TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"


def checkpoint_name(epoch: int) -> str:
    return f"{CHECKPOINT_PREFIX}{epoch:05d}"


def append_event(events: str, metrics: dict[str, Any], checkpoint_path: str | None) -> None:
    """One report as a line of the driver's events file (what ``EpochPump`` follows)."""
    with open(events, "a") as handle:
        handle.write(json.dumps({"metrics": metrics, "checkpoint": checkpoint_path}, default=float))
        handle.write("\n")


def checkpoint_at(store: Store, run: str, name: str) -> Any:
    """A checkpoint folder in the output store, as a ``ray.train.Checkpoint``."""
    import ray.train

    path, filesystem = store.ray_storage(posixpath.join(CHECKPOINTS, run, name))
    return ray.train.Checkpoint(path, filesystem=filesystem)


def newest(*checkpoints: Any) -> Any:
    """Of Ray Train's restored checkpoint and the driver's choice, the later epoch (names
    sort by epoch): after a worker restart Ray's is newer, after a run in local mode the
    driver's is the only one."""
    present = [c for c in checkpoints if c is not None]
    return max(present, key=lambda c: posixpath.basename(c.path.rstrip("/")), default=None)


class RayTrainReports:
    """Ray Train keeps the checkpoints (cluster runs and ``--workers N``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.resume_from: str | None = config.get(RESUME_KEY)
        self.output: str | None = config.get(OUTPUT_KEY)

    def restore(self, run: str) -> Any:
        import ray.train

        chosen = None
        if self.resume_from and self.output:
            chosen = checkpoint_at(Store(self.output), run, self.resume_from)
        return newest(ray.train.get_checkpoint(), chosen)

    def report(self, metrics: dict[str, float], folder: Path | None, name: str) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


class InProcessReports(RayTrainReports):
    """Local mode: checkpoints copied to ``checkpoints/<run>/`` of the output store (the
    newest ``keep``), and every report appended to the driver's events file."""

    def __init__(self, config: dict[str, Any], plan: TrainPlan) -> None:
        super().__init__(config)
        self.store = Store(config[OUTPUT_KEY])
        self.events: str = config[IN_PROCESS_KEY]
        self.run, self.keep = plan.name, plan.checkpoint_keep

    def report(self, metrics: dict[str, float], folder: Path | None, name: str) -> None:
        import ray.train

        stored = None
        if folder is not None:
            stored = self._store(folder, name)
        append_event(self.events, metrics, stored.path if stored else None)
        ray.train.report(metrics, checkpoint=stored)

    def _store(self, folder: Path, name: str) -> Any:
        run_dir = posixpath.join(CHECKPOINTS, self.run)
        target = self.store.path(run_dir, name)
        self.store.fs.makedirs(target, exist_ok=True)
        for item in folder.iterdir():
            self.store.fs.put_file(str(item), posixpath.join(target, item.name))
        # Ray Train's record describes an older run now: it must not resume from it.
        self.store.remove(posixpath.join(run_dir, RAY_TRAIN_SNAPSHOT))
        saved = [c for c in self.store.children(run_dir) if c.startswith(CHECKPOINT_PREFIX)]
        for old in saved[: max(0, len(saved) - self.keep)]:
            self.store.remove(posixpath.join(run_dir, old))
        return checkpoint_at(self.store, self.run, name)


def reports_for(config: dict[str, Any], plan: TrainPlan) -> RayTrainReports:
    return InProcessReports(config, plan) if config.get(IN_PROCESS_KEY) else RayTrainReports(config)


@dataclass
class LoopState:
    """What a checkpoint remembers besides the weights (``state.json``)."""

    epoch: int = 0
    total_epochs: int = 0
    fingerprint: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    confusion: list[list[int]] | None = None

    @classmethod
    def load(cls, path: Path) -> LoopState:
        return cls(**json.loads(path.read_text()))

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))


def update_early_stopping(
    state: LoopState, stopping: dict[str, Any] | None, metrics: dict[str, float]
) -> None:
    """Track the best value of the watched metric; stop after ``patience`` epochs without
    an improvement larger than ``minDelta``."""
    if not stopping:
        return
    value = metrics.get(stopping["metric"])
    if value is None or math.isnan(value):
        return
    delta = stopping["minDelta"]
    if state.best is None:
        improved = True
    elif stopping["mode"] == "min":
        improved = value < state.best - delta
    else:
        improved = value > state.best + delta
    if improved:
        state.best, state.best_epoch, state.bad_epochs = value, state.epoch, 0
    else:
        state.bad_epochs += 1
        state.stopped_early = state.bad_epochs >= stopping["patience"]


def make_optimizer(settings: dict[str, Any], params: Any) -> torch.optim.Optimizer:
    lr, decay = settings["learningRate"], settings["weightDecay"]
    if settings["name"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=settings["momentum"], weight_decay=decay)
    if settings["name"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=decay)


class Objective:
    """Loss and metric sums of one batch, by task."""

    def __init__(self, plan: TrainPlan, transform: InputTransform | None = None) -> None:
        self.task = plan.task
        self.classes = plan.num_outputs if plan.task == "classification" else 0
        self.bernoulli = plan.likelihood == "bernoulli"
        self.beta = float(plan.section.get("beta", 1.0))
        self.transform = transform or InputTransform()

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor | None,
        sums: torch.Tensor,
        confusion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Add the batch to ``sums`` (and ``confusion``); return the mean loss to minimize."""
        n = x.shape[0]
        sums[_COUNT] += n
        if self.task == "generation":
            out, mu, logvar = model(x)
            recon = self.reconstruction_nll(out, x)
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
            loss = (recon + self.beta * kl).sum()
            sums[_RECON] += recon.sum().detach()
            sums[_KL] += kl.sum().detach()
        elif self.task == "classification":
            assert y is not None
            out = model(x)
            loss = F.cross_entropy(out.float(), y, reduction="sum")
            predicted = out.argmax(dim=1)
            sums[_CORRECT] += (predicted == y).sum()
            if confusion is not None:
                confusion += torch.bincount(
                    y * self.classes + predicted, minlength=self.classes**2
                ).view(self.classes, self.classes)
        else:
            assert y is not None
            out = model(x).float()
            out = out.squeeze(-1) if y.dim() == 1 else out.reshape(y.shape)
            error = out - y
            loss = _per_sample(error.pow(2)).sum()
            with torch.no_grad():  # the metrics, in the data's own units
                units = self.transform.errors_in_data_units(error.detach())
                sums[_SQUARED] += _per_sample(units.pow(2)).sum()
                sums[_ABSOLUTE] += _per_sample(units.abs()).sum()
        sums[_LOSS] += loss.detach().float()
        return loss / n

    def reconstruction_nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample negative log-likelihood of the input under the decoder."""
        out = out.float()
        if self.bernoulli:
            return F.binary_cross_entropy_with_logits(out, x.clamp(0, 1), reduction="none").sum(
                dim=1
            )
        return 0.5 * ((out - x).pow(2) + math.log(2 * math.pi)).sum(dim=1)

    def metrics(self, train: torch.Tensor, val: torch.Tensor) -> dict[str, float]:
        t, v = train.tolist(), val.tolist()
        tn, vn = max(t[_COUNT], 1.0), max(v[_COUNT], 1.0)
        out = {"train_loss": t[_LOSS] / tn, "val_loss": v[_LOSS] / vn}
        if self.task == "classification":
            out |= {"train_accuracy": t[_CORRECT] / tn, "val_accuracy": v[_CORRECT] / vn}
        elif self.task == "regression":
            out |= {"val_mse": v[_SQUARED] / vn, "val_mae": v[_ABSOLUTE] / vn}
        else:
            out |= {
                "val_elbo": -(v[_RECON] + v[_KL]) / vn,
                "val_recon": v[_RECON] / vn,
                "val_kl": v[_KL] / vn,
            }
        return out


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """A multi-output regression's per-sample mean over its outputs (a forecast's
    horizon and targets); one output stays as it is."""
    return values if values.dim() == 1 else values.reshape(values.shape[0], -1).mean(dim=1)


class ShardBatches:
    """Batches of one dataset shard. The first pass streams from Ray Data; when the plan
    allows (the shard fits in memory), it is kept as tensors and later epochs are shuffled
    in memory, which saves Ray Data's per-epoch start-up on small data."""

    def __init__(
        self,
        shard: Any,
        plan: TrainPlan,
        device: torch.device,
        *,
        shuffle: bool,
        transform: InputTransform | None = None,
        rank: int = 0,
    ) -> None:
        self.shard, self.plan, self.device, self.shuffle = shard, plan, device, shuffle
        self.cached: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.first: torch.Tensor | None = None
        self.label_dtype = torch.int64 if plan.task == "classification" else torch.float32
        self.transform = transform or InputTransform()
        self.rank = rank
        self.augmentation = torch.Generator()

    def _to_device(
        self, x: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch on the device, in the data's units (pixels stay 8-bit)."""
        x = x.to(self.device, non_blocking=True)
        if x.dtype != torch.uint8:
            x = x.float()
        if y is not None:
            y = y.to(self.device, self.label_dtype, non_blocking=True)
        return x, y

    def _convert(
        self, x: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch as the model learns it: the input transform applied."""
        x, y = self._to_device(x, y)
        x, y = self.transform.batch(x, y, train=self.shuffle, generator=self.augmentation)
        return x.float(), y

    def epoch(
        self, epoch: int, *, raw: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """The shard's batches for one epoch, as the model learns them, or (``raw``) in
        the data's own units."""
        # Augmentation draws anew each epoch and rank, and the same again on a rerun.
        self.augmentation.manual_seed(self.plan.seed * 1_000_003 + epoch * 7_919 + self.rank)
        convert = self._to_device if raw else self._convert
        size = self.plan.batch_size
        if self.cached is not None:
            x, y = self.cached
            order = torch.arange(len(x))
            if self.shuffle:
                order = torch.randperm(
                    len(x), generator=torch.Generator().manual_seed(self.plan.seed + epoch)
                )
            for start in range(0, len(x), size):
                index = order[start : start + size]
                yield convert(x[index], None if y is None else y[index])
            return
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        batches = self.shard.iter_torch_batches(
            batch_size=size,
            local_shuffle_buffer_size=size * 8 if self.shuffle else None,
            local_shuffle_seed=self.plan.seed + epoch if self.shuffle else None,
        )
        for batch in batches:
            x, y = batch["x"], batch.get("y")
            if self.first is None:
                self.first = x[:RECONSTRUCTIONS].clone()
            if self.plan.cache_batches:
                xs.append(x)
                if y is not None:
                    ys.append(y)
            yield convert(x, y)
        if self.plan.cache_batches and xs:
            self.cached = (torch.cat(xs), torch.cat(ys) if ys else None)

    def sample(self) -> torch.Tensor | None:
        """A few inputs of this shard, kept from the first pass, as the model reads them
        (for the VAE's plot)."""
        if self.first is None:
            return None
        first, _ = self._to_device(self.first, None)
        inputs, _ = self.transform.batch(first, None, train=False, generator=self.augmentation)
        return inputs.float()


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _autocast(plan: TrainPlan, device: torch.device) -> tuple[AbstractContextManager[Any], Any]:
    """bf16 autocast where the GPU supports it, else fp16 with a GradScaler; float32 on CPU."""
    if not (plan.mixed_precision and device.type == "cuda"):
        return nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast(device_type="cuda", dtype=dtype), scaler


def _final_extras(
    model: nn.Module, plan: TrainPlan, val: ShardBatches, device: torch.device
) -> dict[str, Any]:
    """What the outputs need from the trained model: VAE samples and reconstructions, or a
    regression's validation predictions against the truth."""
    if plan.task == "regression":
        return _regression_extras(model, val)
    if plan.model_type != "vae":
        return {}
    net = getattr(model, "module", model)
    count = int(plan.section.get("samples", 16))
    squash = torch.sigmoid if plan.likelihood == "bernoulli" else (lambda t: t)
    with torch.no_grad():
        z = torch.randn(count, net.latent, generator=torch.Generator().manual_seed(plan.seed)).to(
            device
        )
        extras: dict[str, Any] = {"samples": squash(net.decode(z)).cpu()}
        originals = val.sample()
        if originals is not None:
            originals = originals.to(device)
            mu = net.mu(net.encoder(originals))
            extras["originals"] = originals.cpu()
            extras["reconstructions"] = squash(net.decode(mu)).cpu()
    return extras


#: Validation rows kept for the predictions-against-truth plot.
PREDICTION_SAMPLES = 2000


def _regression_extras(model: nn.Module, val: ShardBatches) -> dict[str, Any]:
    """Up to ``PREDICTION_SAMPLES`` validation targets and predictions, and the inputs of
    the first few (the same rows, in the same order)."""
    model.eval()
    truth: list[torch.Tensor] = []
    predicted: list[torch.Tensor] = []
    inputs: torch.Tensor | None = None
    transform = val.transform
    with torch.no_grad():
        for x, y in val.epoch(0, raw=True):
            if y is None:
                break
            if inputs is None:
                inputs = x[:RECONSTRUCTIONS].cpu()
            learnt, _ = transform.batch(x, None, train=False, generator=val.augmentation)
            out = model(learnt.float()).float()
            out = out.squeeze(-1) if y.dim() == 1 else out.reshape(y.shape)
            truth.append(y.cpu())
            predicted.append(transform.predictions_in_data_units(out, x).cpu())
            if sum(len(t) for t in truth) >= PREDICTION_SAMPLES:
                break
    if inputs is None:
        return {}
    return {
        "inputs": inputs,
        "truth": torch.cat(truth)[:PREDICTION_SAMPLES],
        "predicted": torch.cat(predicted)[:PREDICTION_SAMPLES],
    }


def _save(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: LoopState,
    extras: dict[str, Any],
) -> None:
    torch.save(getattr(model, "module", model).state_dict(), directory / MODEL_FILE)
    torch.save(optimizer.state_dict(), directory / OPTIMIZER_FILE)
    state.dump(directory / STATE_FILE)
    if extras:
        torch.save(extras, directory / EXTRAS_FILE)


class WorkerRun:
    """One worker's run: the replica, its optimizer, its shards and the loop state, restored
    from the latest checkpoint when there is one (a restart continues at the next epoch)."""

    def __init__(
        self, plan: TrainPlan, reports: RayTrainReports, shards: dict[str, list[Any]] | None = None
    ) -> None:
        import ray.train
        import ray.train.torch

        self.plan, self.reports = plan, reports
        #: When Ray Train handed this worker the loop (its process, imports and process
        #: group are up): the start's split between Ray Train and the loop's own setup.
        self.loop_started = time.time()
        torch.set_num_threads(plan.threads)
        self.rank = ray.train.get_context().get_world_rank()
        torch.manual_seed(plan.seed)  # the same initial weights on every rank
        model = build_model(plan)
        self.state = LoopState(total_epochs=plan.epochs, fingerprint=plan.fingerprint)
        optimizer_state = None
        checkpoint = reports.restore(plan.name)
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                model.load_state_dict(torch.load(Path(folder) / MODEL_FILE, map_location="cpu"))
                optimizer_state = torch.load(Path(folder) / OPTIMIZER_FILE, map_location="cpu")
                self.state = LoopState.load(Path(folder) / STATE_FILE)
            self.state.total_epochs = plan.epochs
        self.model = ray.train.torch.prepare_model(model)  # DDP when more than one worker
        self.optimizer = make_optimizer(plan.optimizer, self.model.parameters())
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.device = ray.train.torch.get_device()
        torch.manual_seed(plan.seed * 7919 + self.rank * 131 + self.state.epoch)  # dropout
        transform = transforms.build(plan.input_transform, self.device)
        self.objective = Objective(plan, transform)
        self.train = ShardBatches(
            _shard(shards, "train", self.rank), plan, self.device, shuffle=True,
            transform=transform, rank=self.rank,
        )  # fmt: skip
        self.val = ShardBatches(
            _shard(shards, "validation", self.rank), plan, self.device, shuffle=False,
            transform=transform, rank=self.rank,
        )  # fmt: skip
        self.autocast, self.scaler = _autocast(plan, self.device)
        self.first_step: float | None = None

    def train_epoch(self, epoch: int) -> torch.Tensor:
        self.model.train()
        rate = learning_rate(self.plan.optimizer, epoch, self.plan.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        sums = torch.zeros(7, dtype=torch.float64, device=self.device)
        for x, y in self.train.epoch(epoch):
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast:
                loss = self.objective(self.model, x, y, sums)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            if self.first_step is None:
                self.first_step = time.time()
        return sums

    def validate(self, epoch: int) -> torch.Tensor:
        self.model.eval()
        sums = torch.zeros(7, dtype=torch.float64, device=self.device)
        classes = self.objective.classes
        confusion = (
            torch.zeros(classes, classes, dtype=torch.int64, device=self.device)
            if classes
            else None
        )
        with torch.no_grad(), self.autocast:
            for x, y in self.val.epoch(epoch):
                self.objective(self.model, x, y, sums, confusion)
        if confusion is not None:
            self.state.confusion = _all_reduce(confusion).cpu().tolist()
        return sums

    def run(self) -> None:
        plan, state = self.plan, self.state
        start = state.epoch + 1
        for epoch in range(start, plan.epochs + 1):
            began = time.perf_counter()
            train_sums = self.train_epoch(epoch)
            train_seconds = time.perf_counter() - began
            val_sums = self.validate(epoch)
            _all_reduce(train_sums)
            _all_reduce(val_sums)
            metrics = {
                "epoch": float(epoch),
                **self.objective.metrics(train_sums.cpu(), val_sums.cpu()),
            }
            metrics["samples_per_second"] = float(train_sums[_COUNT]) / max(train_seconds, 1e-9)
            metrics["epoch_seconds"] = time.perf_counter() - began
            state.epoch = epoch
            state.history.append(dict(metrics))
            update_early_stopping(state, plan.early_stopping, metrics)
            if epoch == start and self.first_step is not None:
                metrics["first_step_unix"] = self.first_step
                metrics["loop_started_unix"] = self.loop_started
            final = epoch == plan.epochs or state.stopped_early
            if final:
                metrics["stopped_early"] = float(state.stopped_early)
            self.report(metrics, save=final or epoch % plan.checkpoint_every == 0, final=final)
            if state.stopped_early:
                return
        if start > plan.epochs:  # restored after the last epoch: report it again
            self.report(
                dict(state.history[-1]) if state.history else {"epoch": float(state.epoch)},
                save=True,
                final=True,
            )

    def report(self, metrics: dict[str, float], *, save: bool, final: bool) -> None:
        """Every rank reports (it is a barrier); rank 0 attaches the checkpoint."""
        name = checkpoint_name(self.state.epoch)
        if not save or self.rank != 0:
            self.reports.report(metrics, None, name)
            return
        extras = _final_extras(self.model, self.plan, self.val, self.device) if final else {}
        with tempfile.TemporaryDirectory(prefix="kubetrain-ckpt-") as folder:
            _save(Path(folder), self.model, self.optimizer, self.state, extras)
            self.reports.report(metrics, Path(folder), name)


def _shard(shards: dict[str, list[Any]] | None, name: str, rank: int) -> Any:
    """This rank's part of a dataset: split by the driver, else by Ray Train."""
    if shards is None:
        import ray.train

        return ray.train.get_dataset_shard(name)
    return shards[name][rank]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The built-in loop (see the module docstring for the ``config`` it receives)."""
    plan = TrainPlan.from_dict(config["plan"])
    WorkerRun(plan, reports_for(config, plan), config.get(SHARDS_KEY)).run()
