"""The TrainingJob API, version v1alpha1.

These pydantic models are the single source of truth: the CRD in ``crds/`` is generated
from them (``kubetrain crd``), the CLI validates manifests with them, the runtime reads
its settings from them and the operator builds Ray clusters from them.

Field descriptions double as ``kubectl explain`` text, so they are written for users.
CEL rules that OpenAPI cannot express live next to the field they guard, under the
``x-kubernetes-validations`` key of ``json_schema_extra``; the same rules are mirrored
by pydantic validators so that ``kubetrain validate`` catches them without a cluster.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from kubetrain.api import grammar
from kubetrain.api.grammar import DnsSubdomain, ImageReference, LabelKey, LabelValue
from kubetrain.api.quantity import POSITIVE_QUANTITY_PATTERN, parse_quantity
from kubetrain.errors import SpecError

GROUP = "kubetrain.io"
VERSION = "v1alpha1"
KIND = "TrainingJob"
PLURAL = "trainingjobs"
SINGULAR = "trainingjob"
SHORT_NAMES = ["tj"]
API_VERSION = f"{GROUP}/{VERSION}"

#: Longest TrainingJob name; children append a uid fragment and a role, and pod names
#: must stay valid hostnames (63 characters).
MAX_NAME_LENGTH = 40
#: Child objects (Services among them) take the job's name, so it is a DNS-1035 label.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def nested_error(relative_path: str, message: str) -> ValueError:
    """A model-level error that belongs to one of the model's fields: ``manifests`` moves
    it to that field's path, so that client and server name the same field."""
    return ValueError(f"[{relative_path}] {message}")


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


#: Resources are below one exa (10^18): far above any node, and below float trouble.
QUANTITY_LIMIT = 10**18
QUANTITY_RANGE = "must be more than zero and less than 1E (10^18)"


def _check_quantity(value: str | int) -> str | int:
    if isinstance(value, str) and value.startswith("-"):
        raise ValueError(f"{value!r} is not a Kubernetes quantity of a resource (it is negative)")
    amount = value if isinstance(value, int) else parse_quantity(value)
    if not 0 < amount < QUANTITY_LIMIT:
        raise ValueError(f"{value!r} {QUANTITY_RANGE}")
    return value


#: A resource amount: apimachinery's grammar (``QUANTITY_PATTERN``) without a sign of minus,
#: and more than zero, which the API server checks with its own quantity library in CEL.
Quantity = Annotated[
    str | int,
    AfterValidator(_check_quantity),
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": POSITIVE_QUANTITY_PATTERN,
            "x-kubernetes-validations": [
                _cel(
                    f"type(self) == int ? self > 0 && self < {QUANTITY_LIMIT} : "
                    "(!isQuantity(self) || (quantity(self).isGreaterThan(quantity('0'))"
                    " && quantity(self).isLessThan(quantity('1E'))))",
                    QUANTITY_RANGE,
                )
            ],
        }
    ),
]


#: A column of the data: any non-empty name (CSV headers, parquet fields).
ColumnName = Annotated[str, Field(min_length=1, max_length=1024)]


def _each_once(names: list[str]) -> list[str]:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise nested_error(f"[{index}]", f"duplicate value {name!r}")
        seen.add(name)
    return names


#: Column lists name each column once; the API server checks it as a set-type list.
Columns = Annotated[
    list[ColumnName],
    AfterValidator(_each_once),
    Field(json_schema_extra={"x-kubernetes-list-type": "set"}),
]
#: Layer widths, channel counts and shape dimensions: at least one unit each.
Units = Annotated[int, Field(ge=1, le=65536)]


def _immutable(what: str) -> dict[str, Any]:
    return {"x-kubernetes-validations": [_cel("self == oldSelf", f"{what} is immutable once set")]}


class ApiModel(BaseModel):
    """Base for every API object: fields carry their wire (camelCase) names, so that a
    reader of Python code and a reader of YAML see the same words. Unknown fields are
    rejected, as the API server's strict field validation does, and types are strict as
    the wire's are: ``"10"`` is no integer and ``"true"`` no boolean, for the server either."""

    model_config = ConfigDict(extra="forbid", strict=True)


# --------------------------------------------------------------------------- data


class BuiltinDataset(ApiModel):
    name: Literal["digits", "iris", "wine"] = Field(
        description="A dataset bundled with scikit-learn: digits (8x8 images, 10 classes), "
        "iris (4 features, 3 classes) or wine (13 features, 3 classes)."
    )


class GeneratedDataset(ApiModel):
    kind: Literal["sine"] = Field(
        "sine",
        description="Generator. sine: noisy sine waves with random frequency and phase, "
        "as sequences; the label is the next value (regression) or the frequency band "
        "(classification).",
    )
    samples: int = Field(2000, ge=10, le=10_000_000, description="Number of sequences to generate.")
    sequenceLength: int = Field(32, ge=2, le=10_000, description="Time steps per sequence.")
    noise: float = Field(0.1, ge=0, le=10, description="Standard deviation of the Gaussian noise.")
    classes: int = Field(
        3, ge=2, le=100, description="Frequency bands, used as labels for classification."
    )
    seed: int = Field(0, ge=0, description="Seed of the generator, for reproducible data.")


#: File endings that say the format; a path with one of them must name that format.
FORMAT_ENDINGS: dict[str, tuple[str, ...]] = {
    "csv": (".csv", ".csv.gz"),
    "parquet": (".parquet", ".pq"),
    "jsonl": (".jsonl", ".ndjson", ".json"),
    "numpy": (".npy", ".npz"),
}
FORMAT_MISMATCH = "format does not fit the file's ending: " + "; ".join(
    f"{'/'.join(endings)} is {fmt}" for fmt, endings in FORMAT_ENDINGS.items()
)


class UriSource(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    " && ".join(
                        "(!("
                        + " || ".join(f"self.path.lowerAscii().endsWith('{e}')" for e in endings)
                        + f") || self.format == '{fmt}')"
                        for fmt, endings in FORMAT_ENDINGS.items()
                    ),
                    FORMAT_MISMATCH,
                    ".format",
                )
            ]
        }
    )

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="A file or directory: a local or PVC-mounted path (/data/x.csv), or an "
        "fsspec URI such as s3://bucket/prefix/ or gs://bucket/file.parquet.",
    )
    format: Literal["csv", "parquet", "jsonl", "numpy"] = Field(
        "csv",
        description="File format. numpy expects .npy (or .npz with arrays named x and y).",
    )

    @model_validator(mode="after")
    def _format_fits_ending(self) -> UriSource:
        lowered = self.path.lower()
        for fmt, endings in FORMAT_ENDINGS.items():
            if lowered.endswith(endings) and self.format != fmt:
                raise nested_error("format", FORMAT_MISMATCH)
        return self


class DataSource(ApiModel):
    """Exactly one of builtin, generated or uri."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "[has(self.builtin), has(self.generated), has(self.uri)]"
                    ".filter(x, x).size() == 1",
                    "exactly one of builtin, generated or uri must be set",
                )
            ]
        }
    )

    builtin: BuiltinDataset | None = Field(None, description="A dataset bundled with scikit-learn.")
    generated: GeneratedDataset | None = Field(None, description="A synthetic dataset.")
    uri: UriSource | None = Field(None, description="Files read through Ray Data and fsspec.")

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSource:
        chosen = [n for n in ("builtin", "generated", "uri") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError("exactly one of builtin, generated or uri must be set")
        return self


FilterOp = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null"]


_LIST_OPS = ("in", "not_in")
_UNARY_OPS = ("is_null", "not_null")
NEEDS_LIST = "ops in and not_in need a list value"
NEEDS_SCALAR = "comparisons need a scalar value (a number, a string or a boolean)"


class FilterRule(ApiModel):
    """The operand is free-form JSON, which the API server's CEL cannot see; its fit to
    the op is checked by the client and by the operator, before any pod exists."""

    column: ColumnName = Field(description="Column the condition reads.")
    op: FilterOp = Field(description="Comparison. Rows for which it is false are dropped.")
    value: Any = Field(
        None,
        description="Right-hand side: a number, a string, or a list for in/not_in. "
        "Not used by is_null/not_null.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _value_fits_op(self) -> FilterRule:
        if self.op in _LIST_OPS and not isinstance(self.value, list):
            raise nested_error("value", NEEDS_LIST)
        if self.op not in _LIST_OPS + _UNARY_OPS and (
            self.value is None or isinstance(self.value, (list, dict))
        ):
            raise nested_error("value", NEEDS_SCALAR)
        return self


class CastRule(ApiModel):
    column: ColumnName = Field(description="Column to convert.")
    type: Literal["int", "float", "string", "bool"] = Field(
        description="Target type. Rows whose value cannot be converted are dropped."
    )


class ClipRule(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.min) || has(self.max)", "set min, max or both"),
                _cel(
                    "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "min must not exceed max",
                ),
            ]
        }
    )

    column: ColumnName = Field(description="Numeric column to clip.")
    min: float | None = Field(None, description="Lower bound; smaller values are raised to it.")
    max: float | None = Field(None, description="Upper bound; larger values are lowered to it.")

    @model_validator(mode="after")
    def _bounds(self) -> ClipRule:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


DROP_NULLS_IN_NEEDS = "dropNullsIn needs dropNulls: true"
DUPLICATE_KEYS_NEED = "duplicateKeys needs dropDuplicates: true"
FILL_VALUE_NEEDED = "strategy constant needs a fillValue"
FILL_VALUE_UNUSED = "fillValue is used only with strategy constant"


class Cleaning(ApiModel):
    """Declarative cleaning, applied in this order: casts, dropNulls, filters, clip,
    dropDuplicates. Each rule's dropped rows are counted in status.dataStats."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.dropNullsIn) || self.dropNullsIn.size() == 0 || self.dropNulls",
                    DROP_NULLS_IN_NEEDS,
                    ".dropNullsIn",
                ),
                _cel(
                    "!has(self.duplicateKeys) || self.duplicateKeys.size() == 0"
                    " || self.dropDuplicates",
                    DUPLICATE_KEYS_NEED,
                    ".duplicateKeys",
                ),
            ]
        }
    )

    dropNulls: bool = Field(False, description="Drop rows with a null (or empty CSV cell).")
    dropNullsIn: Columns = Field(
        default_factory=list,
        description="Only consider these columns for dropNulls (empty means all columns).",
    )
    dropDuplicates: bool = Field(False, description="Drop duplicate rows across the whole dataset.")
    duplicateKeys: Columns = Field(
        default_factory=list,
        description="Columns that identify a duplicate (empty means all columns).",
    )
    filters: list[FilterRule] = Field(
        default_factory=list, max_length=64, description="Row filters; all must hold."
    )
    casts: list[CastRule] = Field(default_factory=list, max_length=256, description="Type casts.")
    clip: list[ClipRule] = Field(
        default_factory=list, max_length=256, description="Value clipping."
    )

    @model_validator(mode="after")
    def _switches_for_lists(self) -> Cleaning:
        if self.dropNullsIn and not self.dropNulls:
            raise nested_error("dropNullsIn", DROP_NULLS_IN_NEEDS)
        if self.duplicateKeys and not self.dropDuplicates:
            raise nested_error("duplicateKeys", DUPLICATE_KEYS_NEED)
        return self


class Impute(ApiModel):
    """fillValue is free-form JSON, which the API server's CEL cannot see; whether it
    fits the strategy is checked by the client and by the operator, before any pod."""

    columns: Columns = Field(min_length=1, description="Columns whose nulls are filled.")
    strategy: Literal["mean", "most_frequent", "constant"] = Field(
        "mean", description="How the fill value is chosen (fitted on the training split)."
    )
    fillValue: float | int | str | None = Field(
        None,
        description="Value for strategy constant: a number or a string.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _fill_value_with_constant(self) -> Impute:
        if self.strategy == "constant" and self.fillValue is None:
            raise nested_error("fillValue", FILL_VALUE_NEEDED)
        if self.strategy != "constant" and self.fillValue is not None:
            raise nested_error("fillValue", FILL_VALUE_UNUSED)
        return self


class Scale(ApiModel):
    columns: Columns = Field(min_length=1, description="Numeric columns to scale.")
    method: Literal["standard", "minmax"] = Field(
        "standard", description="standard: zero mean, unit variance. minmax: into [0, 1]."
    )


class Encode(ApiModel):
    columns: Columns = Field(min_length=1, description="Categorical columns to encode.")
    method: Literal["onehot", "ordinal"] = Field("onehot", description="Encoding.")


class Preprocessing(ApiModel):
    """Ray Data preprocessors, fitted on the training split only."""

    impute: list[Impute] = Field(default_factory=list, max_length=64, description="Imputers.")
    scale: list[Scale] = Field(default_factory=list, max_length=64, description="Scalers.")
    encode: list[Encode] = Field(default_factory=list, max_length=64, description="Encoders.")


class ValidationSplit(ApiModel):
    fraction: float = Field(0.2, gt=0, lt=1, description="Share of rows held out for validation.")
    seed: int = Field(42, ge=0, description="Seed of the shuffle before the split.")


#: The label column of the bundled and generated datasets.
BUILTIN_LABEL = "target"
BUILTIN_LABEL_ONLY = f"bundled and generated datasets have one label column, {BUILTIN_LABEL!r}"
LABEL_NOT_FEATURE = "the label cannot also be a feature"


class DataSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"has(self.source.uri) || !has(self.label) || self.label == '{BUILTIN_LABEL}'",
                    BUILTIN_LABEL_ONLY,
                    ".label",
                ),
                _cel(
                    "!has(self.label) || !has(self.features) || !(self.label in self.features)",
                    LABEL_NOT_FEATURE,
                    ".features",
                ),
            ]
        }
    )

    source: DataSource = Field(description="Where the rows come from.")
    cleaning: Cleaning = Field(default_factory=Cleaning, description="Row cleaning rules.")
    preprocessing: Preprocessing = Field(
        default_factory=Preprocessing, description="Feature preprocessing."
    )
    features: Columns = Field(
        default_factory=list,
        description="Feature columns, in order. Empty means every column except the label.",
    )
    label: ColumnName | None = Field(
        None,
        description="Label column. Bundled and generated datasets name theirs 'target'. "
        "Not needed for generation (VAE).",
    )
    validation: ValidationSplit = Field(
        default_factory=ValidationSplit, description="Train/validation split."
    )

    @model_validator(mode="after")
    def _label_fits_source(self) -> DataSpec:
        if self.source.uri is None and self.label not in (None, BUILTIN_LABEL):
            raise nested_error("label", BUILTIN_LABEL_ONLY)
        if self.label is not None and self.label in self.features:
            raise nested_error("features", LABEL_NOT_FEATURE)
        return self


# -------------------------------------------------------------------------- model


IMAGE_SHAPE_FORM = "imageShape is [channels, height, width] or [height, width]"


class CnnSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.kernelSizes.size() == self.channels.size()",
                    "kernelSizes must have one entry per channels entry",
                ),
                _cel(
                    "!has(self.imageShape) || self.imageShape.size() != 1",
                    IMAGE_SHAPE_FORM,
                    ".imageShape",
                ),
            ]
        }
    )

    channels: list[Units] = Field(
        default_factory=lambda: [16, 32],
        min_length=1,
        max_length=8,
        description="Output channels of each convolution block.",
    )
    kernelSizes: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        default_factory=lambda: [3, 3],
        min_length=1,
        max_length=8,
        description="Kernel size of each convolution block.",
    )
    hiddenUnits: int = Field(64, ge=1, le=65536, description="Width of the dense layer.")
    dropout: float = Field(0.25, ge=0, lt=1, description="Dropout before the classifier.")
    imageShape: list[Units] = Field(
        default_factory=list,
        max_length=3,
        description="Input shape [channels, height, width]. Empty means inferred from the "
        "data (a square single-channel image).",
    )

    @model_validator(mode="after")
    def _one_kernel_per_block(self) -> CnnSpec:
        if len(self.kernelSizes) != len(self.channels):
            raise ValueError("kernelSizes must have one entry per channels entry")
        if len(self.imageShape) == 1:
            raise nested_error("imageShape", IMAGE_SHAPE_FORM)
        return self


class RnnSpec(ApiModel):
    cell: Literal["lstm", "gru"] = Field("lstm", description="Recurrent cell.")
    hiddenSize: int = Field(64, ge=1, le=65536, description="Hidden state size.")
    layers: int = Field(1, ge=1, le=16, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Read sequences in both directions.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout between layers.")


class VaeSpec(ApiModel):
    latentDim: int = Field(8, ge=1, le=4096, description="Size of the latent code.")
    hiddenUnits: list[Units] = Field(
        default_factory=lambda: [128],
        min_length=1,
        max_length=8,
        description="Encoder widths; the decoder mirrors them.",
    )
    beta: float = Field(1.0, ge=0, le=1000, description="Weight of the KL term in the ELBO.")
    samples: int = Field(16, ge=0, le=1024, description="Samples generated after training.")


class MlpSpec(ApiModel):
    hiddenUnits: list[Units] = Field(
        default_factory=lambda: [512, 512],
        min_length=1,
        max_length=16,
        description="Widths of the dense layers.",
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout after each dense layer.")
    activation: Literal["relu", "gelu", "tanh"] = Field("relu", description="Activation.")


#: What the built-in loop reports per epoch, by task: the names earlyStopping can watch.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("train_loss", "train_accuracy", "val_loss", "val_accuracy"),
    "regression": ("train_loss", "val_loss", "val_mse", "val_mae"),
    "generation": ("train_loss", "val_loss", "val_elbo", "val_recon", "val_kl"),
}
TIMING_METRICS: tuple[str, ...] = ("samples_per_second", "epoch_seconds")


def _builtin_metrics() -> list[str]:
    names = {name for names in TASK_METRICS.values() for name in names}
    return sorted(names | set(TIMING_METRICS))


ModelType = Literal["cnn", "rnn", "vae", "mlp"]
Task = Literal["classification", "regression", "generation"]
_SECTIONS: tuple[ModelType, ...] = ("cnn", "rnn", "vae", "mlp")
_TASKS_BY_TYPE: dict[str, tuple[Task, ...]] = {
    "cnn": ("classification",),
    "rnn": ("classification", "regression"),
    "vae": ("generation",),
    "mlp": ("classification", "regression"),
}


def default_task(model_type: str) -> Task:
    """The task a model of this type does when the spec names none (the first it can do)."""
    return _TASKS_BY_TYPE[model_type][0]


class ModelSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    " && ".join(f"(!has(self.{s}) || self.type == '{s}')" for s in _SECTIONS),
                    "only the section named by type may be set",
                ),
                _cel(
                    "!has(self.task) || "
                    + " || ".join(
                        f"(self.type == '{t}' && self.task in {list(tasks)})"
                        for t, tasks in _TASKS_BY_TYPE.items()
                    ),
                    "task does not fit the model type: cnn does classification, rnn and mlp "
                    "classification or regression, vae generation",
                    ".task",
                ),
            ]
        }
    )

    type: ModelType = Field(
        description="Model family: cnn (images), rnn (sequences), vae (generation) or mlp "
        "(dense classifier).",
    )
    task: Task | None = Field(
        None,
        description="What is learnt: classification, regression or generation. Unset means "
        "generation for vae and classification otherwise.",
    )
    cnn: CnnSpec | None = Field(None, description="Settings for type cnn.")
    rnn: RnnSpec | None = Field(None, description="Settings for type rnn.")
    vae: VaeSpec | None = Field(None, description="Settings for type vae.")
    mlp: MlpSpec | None = Field(None, description="Settings for type mlp.")

    @model_validator(mode="after")
    def _section_and_task(self) -> ModelSpec:
        for section in _SECTIONS:
            if section != self.type and getattr(self, section) is not None:
                raise ValueError(f"only the section named by type may be set (found {section})")
        if self.task is None:
            self.task = default_task(self.type)
        return self

    @field_validator("task")
    @classmethod
    def _task_fits_type(cls, task: Task | None, info: ValidationInfo) -> Task | None:
        model_type = info.data.get("type")
        if task is not None and model_type and task not in _TASKS_BY_TYPE[model_type]:
            raise ValueError(
                f"task {task} does not fit model type {model_type} "
                f"(allowed: {', '.join(_TASKS_BY_TYPE[model_type])})"
            )
        return task

    @property
    def effective_task(self) -> Task:
        """The task, never None: validation fills it in from the type, but a model built
        without validation (``model_construct``) may not have it."""
        return self.task or default_task(self.type)

    def section(self) -> CnnSpec | RnnSpec | VaeSpec | MlpSpec:
        """The type's settings, defaulted when the manifest left them out."""
        current = getattr(self, self.type)
        if current is not None:
            return current
        return {"cnn": CnnSpec, "rnn": RnnSpec, "vae": VaeSpec, "mlp": MlpSpec}[self.type]()


# ----------------------------------------------------------------------- training


class Optimizer(ApiModel):
    name: Literal["sgd", "adam", "adamw"] = Field("adam", description="Optimizer.")
    learningRate: float = Field(1e-3, gt=0, le=10, description="Learning rate.")
    weightDecay: float = Field(0.0, ge=0, le=1, description="L2 penalty (decoupled for adamw).")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum, for sgd.")
    schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description=(
            "Learning rate over the epochs: constant, or cosine, which decays it from "
            "learningRate to zero along a half cosine, set at each epoch's start (a resumed "
            "run continues on the same curve)."
        ),
    )


#: The built-in metrics for which higher is better; for every other built-in one, lower is.
HIGHER_IS_BETTER = ("train_accuracy", "val_accuracy", "val_elbo", "samples_per_second")
MODE_AGAINST_METRIC = (
    "mode contradicts the metric: higher is better for "
    + ", ".join(HIGHER_IS_BETTER)
    + ", lower for the other built-in metrics"
)


class EarlyStopping(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.mode) || !(self.metric in "
                    f"{_builtin_metrics()}) || "
                    f"((self.metric in {list(HIGHER_IS_BETTER)}) == (self.mode == 'max'))",
                    MODE_AGAINST_METRIC,
                    ".mode",
                )
            ]
        }
    )

    metric: str = Field(
        "val_loss", min_length=1, description="Reported metric to watch, such as val_loss."
    )
    mode: Literal["min", "max"] | None = Field(
        None,
        description="Whether lower or higher is better. Unset means the metric's own "
        "direction: max for accuracy, ELBO and throughput, min for the rest.",
    )
    patience: int = Field(
        3, ge=1, le=1000, description="Epochs without improvement before stopping."
    )
    minDelta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")

    @model_validator(mode="after")
    def _mode_of_metric(self) -> EarlyStopping:
        if self.mode is None:
            self.mode = "max" if self.metric in HIGHER_IS_BETTER else "min"
        return self

    def contradicts_its_metric(self) -> bool:
        """Checked with the spec, after the metric: a metric of the wrong task is the
        mistake to name first."""
        higher = self.metric in HIGHER_IS_BETTER
        return self.metric in _builtin_metrics() and higher != (self.mode == "max")


class CheckpointPolicy(ApiModel):
    everyEpochs: int = Field(1, ge=1, le=10000, description="Save a checkpoint every N epochs.")
    keep: int = Field(2, ge=1, le=100, description="Checkpoints kept; older ones are deleted.")


class WorkerResources(ApiModel):
    cpu: Quantity = Field("1", description="CPU per training worker (Kubernetes quantity).")
    memory: Quantity = Field("2Gi", description="Memory per training worker.")
    gpu: int = Field(0, ge=0, le=16, description="GPUs per training worker.")


class TrainingSpec(ApiModel):
    epochs: int = Field(10, ge=1, le=100000, description="Passes over the training split.")
    batchSize: int = Field(64, ge=1, le=1_000_000, description="Samples per batch, per worker.")
    optimizer: Optimizer = Field(default_factory=Optimizer, description="Optimizer settings.")
    seed: int = Field(0, ge=0, description="Seed for weights, shuffling and dropout.")
    earlyStopping: EarlyStopping | None = Field(
        None, description="Stop when a metric stops improving. Unset means never."
    )
    checkpoint: CheckpointPolicy = Field(
        default_factory=CheckpointPolicy, description="Checkpoint frequency and retention."
    )
    workers: int = Field(1, ge=1, le=1024, description="Ray Train workers (data-parallel ranks).")
    resourcesPerWorker: WorkerResources = Field(
        default_factory=WorkerResources, description="Resources of each training worker."
    )
    mixedPrecision: bool = Field(False, description="Use automatic mixed precision on GPUs.")
    maxFailures: int = Field(
        0,
        ge=0,
        le=100,
        description="Worker failures Ray Train absorbs by restarting from "
        "the last checkpoint, within one attempt.",
    )
    trainFunction: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="Escape hatch: module:function importable in the image, run as the "
        "per-worker training loop instead of the built-in one.",
    )


# ------------------------------------------------------------------------ cluster


EXISTS_WITHOUT_VALUE = "value must be empty when operator is Exists"
EQUAL_NEEDS_KEY = "operator must be Exists when key is empty"
SECONDS_NEED_NO_EXECUTE = "tolerationSeconds needs effect NoExecute"


def _taint_key(key: str) -> str:
    return key if key == "" else grammar.check_label_key(key)


#: A toleration's key: a label key, or empty (with Exists: every taint), as Kubernetes has it.
TaintKey = Annotated[
    str,
    AfterValidator(_taint_key),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^(?:{grammar.LABEL_KEY_PATTERN[1:-1]})?$",
            "maxLength": grammar.LABEL_KEY_MAX,
        }
    ),
]


class Toleration(ApiModel):
    """The rules are the kubelet's own (Kubernetes' pod validation), checked before any pod
    is built."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.operator != 'Exists' || !has(self.value) || self.value == ''",
                    EXISTS_WITHOUT_VALUE,
                    ".value",
                ),
                _cel(
                    "self.operator == 'Exists' || (has(self.key) && self.key != '')",
                    EQUAL_NEEDS_KEY,
                    ".operator",
                ),
                _cel(
                    "!has(self.tolerationSeconds) || "
                    "(has(self.effect) && self.effect == 'NoExecute')",
                    SECONDS_NEED_NO_EXECUTE,
                    ".tolerationSeconds",
                ),
            ]
        }
    )

    key: TaintKey | None = Field(None, description="Taint key; empty matches all keys with Exists.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: LabelValue | None = Field(None, description="Taint value, for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect; empty matches all effects."
    )
    tolerationSeconds: int | None = Field(
        None, description="For NoExecute: how long to stay once the taint appears."
    )

    @model_validator(mode="after")
    def _kubelet_rules(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise nested_error("value", EXISTS_WITHOUT_VALUE)
        if self.operator == "Equal" and not self.key:
            raise nested_error("operator", EQUAL_NEEDS_KEY)
        if self.tolerationSeconds is not None and self.effect != "NoExecute":
            raise nested_error("tolerationSeconds", SECONDS_NEED_NO_EXECUTE)
        return self


class PodResources(ApiModel):
    cpu: Quantity = Field("1", description="CPU request and limit.")
    memory: Quantity = Field("4Gi", description="Memory request and limit.")


class HeadSpec(ApiModel):
    resources: PodResources = Field(
        default_factory=PodResources, description="Resources of the Ray head pod."
    )


class ClusterSpec(ApiModel):
    image: ImageReference = Field(
        "kubetrain/runtime:0.1.0",
        description="Container image with Ray, torch and kubetrain's runtime.",
    )
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy for the Ray pods."
    )
    nodePool: str | None = Field(
        None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A node pool defined by the operator's admin (for example a100). It "
        "brings its own nodeSelector, tolerations and GPU resource name.",
    )
    head: HeadSpec = Field(default_factory=HeadSpec, description="The Ray head pod.")
    nodeSelector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Added to the pool's nodeSelector."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Added to the pool's tolerations."
    )
    priorityClassName: DnsSubdomain | None = Field(
        None, description="PriorityClass of the Ray pods."
    )
    serviceAccountName: DnsSubdomain | None = Field(
        None,
        description="ServiceAccount of the Ray pods. Unset means one the operator creates "
        "with only the rights the runtime needs.",
    )


# ------------------------------------------------------------------------- output


def is_object_store(uri: str) -> bool:
    """A URI with a scheme other than file:// (s3://, gs://, ...): storage every pod sees.
    The operator (which places outputs) and the runtime (which writes them) both ask."""
    return "://" in uri and not uri.startswith("file://")


class OutputSpec(ApiModel):
    uri: str | None = Field(
        None,
        max_length=4096,
        description="Where the model, metrics, plots and checkpoints go: a local or PVC path "
        "or an fsspec URI (s3://...). Unset means runs/<name> locally, or the job's "
        "volume in a cluster. Must be shared storage when there is more than one node.",
    )
    volumeClaim: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="A PersistentVolumeClaim in the job's namespace, mounted at /output in "
        "every Ray pod: shared storage for checkpoints and outputs. With uri unset, "
        "outputs go to /output/<namespace>/<ray cluster name>.",
    )
    plots: bool = Field(
        True, description="Write PNG plots (loss curves, confusion matrix, samples)."
    )


# ---------------------------------------------------------------------- runPolicy


#: The longest deadline or TTL: anything longer is a mistake (and datetime's end is near).
TEN_YEARS = 10 * 365 * 24 * 3600


class RunPolicy(ApiModel):
    backoffLimit: int = Field(
        1,
        ge=0,
        le=100,
        description="Retries of the whole job after a failure, each "
        "resuming from the last checkpoint.",
    )
    activeDeadlineSeconds: int | None = Field(
        None,
        ge=1,
        le=TEN_YEARS,
        description="Fail with DeadlineExceeded after this long from the start.",
    )
    startupDeadlineSeconds: int = Field(
        600, ge=1, le=86400, description="Fail when the Ray cluster is not ready within this long."
    )
    ttlSecondsAfterFinished: int | None = Field(
        None, ge=0, le=TEN_YEARS, description="Delete the TrainingJob this long after it finished."
    )
    suspend: bool = Field(
        False,
        description="Stop the job and delete its pods, keeping checkpoints; resume "
        "from the last checkpoint when set back to false.",
    )
    cleanupPolicy: Literal["DeleteCluster", "KeepHead", "KeepAll"] = Field(
        "DeleteCluster",
        description="What stays of the Ray cluster after the job finished: nothing, the head "
        "pod for debugging, or everything.",
    )


# --------------------------------------------------------------------------- spec


LABEL_REQUIRED = "is required to train on files, except for vae"
STOPPING_METRIC_UNKNOWN = (
    "earlyStopping.metric is not a metric that the model's task reports: "
    + "; ".join(
        f"{task}: {', '.join((*names, *TIMING_METRICS))}" for task, names in TASK_METRICS.items()
    )
)
_TASK_OF = (
    "(has(self.model.task) ? self.model.task : "
    "(self.model.type == 'vae' ? 'generation' : 'classification'))"
)
_STOPPING_RULE = (
    "!has(self.training.earlyStopping) || has(self.training.trainFunction) || "
    + " || ".join(
        f"({_TASK_OF} == '{task}' && self.training.earlyStopping.metric in "
        f"{list((*names, *TIMING_METRICS))})"
        for task, names in TASK_METRICS.items()
    )
)


class TrainingJobSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.data.source.uri) || has(self.data.label)"
                    " || self.model.type == 'vae'",
                    f"data.label {LABEL_REQUIRED}",
                    ".data.label",
                ),
                _cel(_STOPPING_RULE, STOPPING_METRIC_UNKNOWN, ".training.earlyStopping.metric"),
            ]
        }
    )

    data: DataSpec = Field(
        description="Data source, cleaning and preprocessing.",
        json_schema_extra=_immutable("spec.data"),
    )
    model: ModelSpec = Field(
        description="The model to train.", json_schema_extra=_immutable("spec.model")
    )
    training: TrainingSpec = Field(
        default_factory=TrainingSpec,
        description="Training settings.",
        json_schema_extra=_immutable("spec.training"),
    )
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="The Ray cluster.")
    output: OutputSpec = Field(
        default_factory=OutputSpec,
        description="Output location.",
        json_schema_extra=_immutable("spec.output"),
    )
    runPolicy: RunPolicy = Field(default_factory=RunPolicy, description="Lifecycle policy.")

    @model_validator(mode="after")
    def _label_needed(self) -> TrainingJobSpec:
        if self.model.type != "vae" and self.data.source.uri is not None and not self.data.label:
            raise nested_error("data.label", LABEL_REQUIRED)
        return self

    @model_validator(mode="after")
    def _stopping_metric_reported(self) -> TrainingJobSpec:
        stopping, task = self.training.earlyStopping, self.model.effective_task
        if stopping is None:
            return self
        known = (*TASK_METRICS[task], *TIMING_METRICS)
        # A custom loop reports metrics that cannot be known in advance.
        if not self.training.trainFunction and stopping.metric not in known:
            raise nested_error(
                "training.earlyStopping.metric",
                f"{stopping.metric!r} is not reported for {task}; choose one of: "
                + ", ".join(known),
            )
        if stopping.contradicts_its_metric():
            raise nested_error("training.earlyStopping.mode", MODE_AGAINST_METRIC)
        return self

    @model_validator(mode="after")
    def _fits_bundled_data(self) -> TrainingJobSpec:
        """Bundled and generated data have known columns: check names and shapes now.
        The API server cannot (it knows no datasets); the client and the operator do."""
        from kubetrain.api import bundled  # it imports these models

        try:
            bundled.check(self)
        except SpecError as exc:
            raise nested_error((exc.field or "spec").removeprefix("spec."), exc.message) from None
        return self


# ------------------------------------------------------------------------- status


class StatusModel(ApiModel):
    """Status is written by kubetrain itself, from numbers that Ray and numpy hand over
    (``numpy.int64``); the API server checks the wire types when it is patched, so these
    models convert rather than refuse."""

    model_config = ConfigDict(extra="forbid", strict=False)


Phase = Literal[
    "Pending", "Provisioning", "Running", "Succeeded", "Failed", "Suspended", "Retrying"
]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})


class Condition(StatusModel):
    type: str = Field(description="Condition type, such as Ready, Running, Succeeded, Failed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="One CamelCase word for machines.")
    message: str = Field("", description="Human-readable details.")
    lastTransitionTime: str | None = Field(None, description="When status last changed (RFC 3339).")
    observedGeneration: int | None = Field(None, description="Spec generation this reflects.")


class Progress(StatusModel):
    stage: Literal["data", "training", "finishing"] | None = Field(
        None, description="Current stage."
    )
    epoch: int | None = Field(None, description="Epochs completed.")
    totalEpochs: int | None = Field(None, description="Epochs planned.")
    percent: int | None = Field(None, ge=0, le=100, description="Overall progress, 0-100.")
    samplesPerSecond: float | None = Field(None, description="Training throughput, all workers.")
    etaSeconds: int | None = Field(None, description="Estimated seconds until done.")


class RuleDrop(StatusModel):
    rule: str = Field(description="The cleaning rule, such as dropNulls or filters[0].")
    dropped: int = Field(description="Rows it removed.")


class DataStats(StatusModel):
    rowsRead: int | None = Field(None, description="Rows read from the source.")
    rowsAfterCleaning: int | None = Field(None, description="Rows left after cleaning.")
    droppedByRule: list[RuleDrop] = Field(
        default_factory=list, description="Rows dropped per rule."
    )
    trainRows: int | None = Field(None, description="Rows in the training split.")
    validationRows: int | None = Field(None, description="Rows in the validation split.")


#: The key of the driver log in ``status.artifacts.logConfigMap``.
DRIVER_LOG_KEY = "driver.log"


class Artifacts(StatusModel):
    outputUri: str | None = Field(None, description="Root of the job's outputs.")
    modelUri: str | None = Field(None, description="The final model (state dict and spec).")
    metricsUri: str | None = Field(None, description="metrics.json with the per-epoch history.")
    reportUri: str | None = Field(None, description="The data report.")
    plots: list[str] = Field(default_factory=list, description="PNG plots.")
    logUri: str | None = Field(
        None, description="The Ray driver's whole log, written by the runtime as it runs."
    )
    logConfigMap: str | None = Field(
        None,
        description="ConfigMap (key driver.log) with the driver log's end, saved by the "
        "operator before it deleted the Ray cluster; deleted with the job.",
    )
    latestCheckpoint: str | None = Field(None, description="Newest checkpoint, used on resume.")
    checkpointEpoch: int | None = Field(None, description="Epoch of the newest checkpoint.")


#: Attempts kept in ``status.attemptHistory`` (the newest; backoffLimit allows up to 101).
MAX_ATTEMPT_RECORDS = 20


class AttemptRecord(StatusModel):
    """One finished attempt, so that a retried job shows what each try met."""

    attempt: int = Field(ge=1, description="The attempt's number, from 1.")
    reason: str = Field(description="How it ended (CamelCase), such as OOMKilled or Succeeded.")
    message: str = Field("", description="Details for humans.")
    finishedAt: str | None = Field(None, description="When it ended (RFC 3339).")
    checkpointEpoch: int | None = Field(
        None, description="Epoch of the newest checkpoint when it ended: where the next resumes."
    )


class TrainingJobStatus(StatusModel):
    phase: Phase | None = Field(None, description="Where the job is in its lifecycle.")
    reason: str | None = Field(None, description="Why it is in this phase (CamelCase).")
    message: str | None = Field(None, description="Details for humans.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Standard conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observedGeneration: int | None = Field(None, description="Spec generation last acted on.")
    startTime: str | None = Field(None, description="When the job was first started.")
    completionTime: str | None = Field(None, description="When it reached Succeeded or Failed.")
    attempts: int | None = Field(None, description="Ray job submissions so far.")
    failedAttempts: int | None = Field(
        None,
        description="Attempts that failed; the job is retried while this is at most "
        "runPolicy.backoffLimit.",
    )
    attemptHistory: list[AttemptRecord] = Field(
        default_factory=list,
        max_length=MAX_ATTEMPT_RECORDS,
        description="How each finished attempt ended, oldest first (the newest "
        f"{MAX_ATTEMPT_RECORDS}).",
    )
    rayClusterName: str | None = Field(
        None, description="Name shared by the Ray cluster's objects."
    )
    dashboardURL: str | None = Field(None, description="The Ray dashboard.")
    submissionId: str | None = Field(
        None, description="Ray job submission id of the current attempt."
    )
    progress: Progress | None = Field(None, description="Progress of the current attempt.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Latest metrics.")
    keyMetric: str | None = Field(None, description="The headline metric, as name=value.")
    dataStats: DataStats | None = Field(None, description="Rows read, cleaned and split.")
    artifacts: Artifacts | None = Field(None, description="Where the outputs are.")
    kopf: dict[str, Any] | None = Field(
        None,
        description="The operator's own bookkeeping; not for users.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class ObjectMeta(BaseModel):
    """Only what kubetrain reads; everything else passes through untouched."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)
    namespace: str | None = None


class TrainingJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apiVersion: Literal["kubetrain.io/v1alpha1"]
    kind: Literal["TrainingJob"]
    metadata: ObjectMeta
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None
