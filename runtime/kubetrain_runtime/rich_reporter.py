"""The local terminal display: the current stage with a spinner, a training bar with
epoch/total, loss, the task's headline metric and ETA, then a summary table and the list
of outputs. On a terminal that is not interactive (CI logs) it prints one line per event
instead of redrawing."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.table import Column, Table

from kubetrain.api.v1alpha1 import Artifacts, DataStats, TrainingJob
from kubetrain.api.v1alpha1 import Progress as ProgressModel
from kubetrain_runtime.plan import KEY_METRIC
from kubetrain_runtime.reporting import Reporter, Stage

#: The first line of each stage (the data stage's first step reads and cleans; later
#: steps, such as statistics and preprocessing, get lines of their own).
_STAGE_TEXT = {
    "data": "Reading and cleaning",
    "training": "Training",
    "finishing": "Writing outputs",
}
#: Summary rows, in order, with their labels.
_SUMMARY = (
    ("epoch", "epochs run"),
    ("train_loss", "train loss"),
    ("val_loss", "validation loss"),
    ("val_accuracy", "validation accuracy"),
    ("val_mse", "validation MSE"),
    ("val_mae", "validation MAE"),
    ("val_elbo", "validation ELBO"),
    ("samples_per_second", "samples/s (last epoch)"),
    ("time_to_first_step_seconds", "time to first step (s)"),
    ("starting_ray_seconds", "  starting Ray (s)"),
    ("preparing_data_seconds", "  preparing data (s)"),
    ("starting_training_seconds", "  starting training (s)"),
    ("training_seconds", "training (s)"),
    ("writing_outputs_seconds", "writing outputs (s)"),
    ("wall_seconds", "wall time (s)"),
)


def _eta(seconds: int | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    return f"ETA {minutes}:{secs:02d}"


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == int(value):
        return str(int(value))
    return f"{value:.4g}"


class RichReporter(Reporter):
    def __init__(self, job: TrainingJob | None = None, console: Console | None = None) -> None:
        self.console = console or Console(emoji=False, highlight=False)
        self.live = self.console.is_terminal
        task = job.spec.model.effective_task if job else None
        self.epochs = job.spec.training.epochs if job else None
        self.key = KEY_METRIC.get(task or "", ("val_loss", "min"))[0]
        self.name = job.metadata.name if job else "job"
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}", table_column=Column(min_width=15, no_wrap=True)),
            BarColumn(bar_width=20, table_column=Column(min_width=20)),
            TextColumn("{task.fields[count]}", table_column=Column(min_width=5, no_wrap=True)),
            TextColumn(
                "{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis")
            ),
            console=self.console,
            transient=False,
            disable=not self.live,
        )
        self.task: TaskID | None = None
        self.stage_name: Stage | None = None
        self.line_name = ""
        self.line_started = time.monotonic()
        self.started = False
        #: Between the training stage and its first epoch: workers start (a line of its own).
        self.training_detail: str | None = None

    def _finish_stage(self, info: str | None = None, *, failed: bool = False) -> None:
        """Mark the current line done (or failed), keeping its text and adding its
        duration."""
        if self.task is not None:
            elapsed = time.monotonic() - self.line_started
            current = self.progress.tasks[self.task]
            text = current.fields.get("info", "") if info is None else info
            if failed:
                self.progress.update(self.task, info=f"{text}  [red]failed after {elapsed:.1f}s")
            else:
                done = current.completed if current.total else 1
                self.progress.update(
                    self.task,
                    completed=done,
                    total=current.total or 1,
                    info=f"{text}  [dim]{elapsed:.1f}s",
                )
            self.progress.stop_task(self.task)
            if not self.live:
                state = "failed after" if failed else "took"
                self.console.print(f"  [dim]{escape(self.line_name)} {state} {elapsed:.1f}s")
        self.task = None

    def _begin(self, description: str, detail: str = "", total: int | None = None) -> None:
        """A new line with a spinner (a bar when ``total`` is known) and its own clock."""
        if not self.started:
            self.started = True
            self.progress.start()
        self._finish_stage()
        self.line_name, self.line_started = description, time.monotonic()
        count = f"0/{total}" if total else ""
        self.task = self.progress.add_task(
            description, total=total, info=f"[dim]{escape(detail)}", count=count
        )
        if not self.live:
            self.console.print(f"{description}{': ' + escape(detail) if detail else ''}")

    def stage(self, name: Stage, detail: str = "") -> None:
        if name == self.stage_name and self.task is not None:  # same stage, new detail
            self.progress.update(self.task, info=f"[dim]{escape(detail)}")
            if not self.live:
                self.console.print(f"  {escape(detail)}")
            return
        self.stage_name = name
        if name == "training":
            self.training_detail = detail
            self._begin("Starting training", detail)
            return
        self._begin(_STAGE_TEXT[name], detail)

    def step(self, name: str, detail: str = "") -> None:
        self._begin(name[:1].upper() + name[1:], detail)

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]note:[/] {escape(message)}")

    def data_ready(self, stats: DataStats, report: dict[str, Any]) -> None:
        drops = ", ".join(
            f"{escape(d.rule)} −{d.dropped}" for d in stats.droppedByRule if d.dropped
        )
        line = (
            f"{stats.rowsRead} rows → {stats.rowsAfterCleaning} after cleaning → "
            f"{stats.trainRows} train / {stats.validationRows} validation"
        )
        if drops:
            line += f" [dim]({drops})"
        self._finish_stage(line)
        if not self.live:
            self.console.print(f"  {line}")

    def epoch(self, progress: ProgressModel, metrics: dict[str, float]) -> None:
        parts = [f"loss {metrics.get('train_loss', float('nan')):.4f}"]
        if self.key in metrics:
            parts.append(f"{self.key} {metrics[self.key]:.4f}")
        parts.append(_eta(progress.etaSeconds))
        info = "  ".join(p for p in parts if p)
        if self.training_detail is not None:
            self._begin(_STAGE_TEXT["training"], self.training_detail, total=progress.totalEpochs)
            self.training_detail = None
        if self.task is not None:
            done, total = progress.epoch or 0, progress.totalEpochs
            self.progress.update(
                self.task, completed=done, total=total, info=info, count=f"{done}/{total}"
            )
        if not self.live:
            self.console.print(f"  epoch {progress.epoch}/{progress.totalEpochs}  {info}")

    def checkpoint(self, uri: str, epoch: int) -> None:
        if not self.live:
            self.console.print(f"  [dim]checkpoint after epoch {epoch}")

    def finished(
        self, succeeded: bool, metrics: dict[str, float], artifacts: Artifacts, message: str
    ) -> None:
        self._finish_stage(failed=not succeeded)
        if self.started:
            self.progress.stop()
        if not succeeded:
            return  # the failed stage is marked; the caller prints the one error line
        self.console.print(f"[bold green]✓ {escape(self.name)}[/]: {escape(message)}")
        table = Table(show_header=False)
        table.add_column("metric", style="bold")
        table.add_column("value", justify="right")
        for key, label in _SUMMARY:
            if key in metrics:
                table.add_row(label, _number(metrics[key]))
        self.console.print(table)
        outputs = Table(title="outputs", show_header=False, title_justify="left")
        outputs.add_column("what", style="bold")
        outputs.add_column("where", overflow="fold")
        rows = [
            ("model", artifacts.modelUri),
            ("metrics", artifacts.metricsUri),
            ("data report", artifacts.reportUri),
            *(("plot", p) for p in artifacts.plots),
            ("checkpoint", artifacts.latestCheckpoint),
        ]
        for what, where in rows:
            if where:
                outputs.add_row(what, escape(where))
        self.console.print(outputs)
