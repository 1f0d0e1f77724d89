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
from kubetrain.api.contract import DATA_MOUNT, within_mount
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
    name: Literal["digits", "iris", "wine", "co2", "gunpoint"] = Field(
        description="A dataset shipped inside a Python package (nothing is downloaded): from "
        "scikit-learn digits (8x8 images, 10 classes), iris (4 features, 3 classes) and wine "
        "(13 features, 3 classes); statsmodels' co2 (weekly CO2 at Mauna Loa, 1958-2001: "
        "columns date and co2, with 59 gaps), a series to forecast; sktime's gunpoint (UCR "
        "GunPoint: 200 series of 150 steps, 2 classes, long form: series, split (UCR's train "
        "or test), t, value, target)."
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
#: Image files that the ``images`` format reads from class folders (any letter case).
IMAGE_ENDINGS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
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
    format: Literal["csv", "parquet", "jsonl", "numpy", "images"] = Field(
        "csv",
        description="File format. numpy expects .npy (or .npz with arrays named x and y). "
        "images: a folder with one subfolder per class (root/<class>/<file>.png, .jpg, "
        ".jpeg or .webp); each image's label is its folder's name, in the column 'class'.",
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


def _size(field: str) -> str:
    """CEL: the length of a list field, 0 when it is absent."""
    return f"(has(self.{field}) ? self.{field}.size() : 0)"


#: The largest image side kubetrain resizes to or reads without resizing: a bound on what
#: one sample holds in memory (2048 x 2048 RGB is 12 MiB).
MAX_IMAGE_SIDE = 2048
ImageSide = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]
IMAGE_PAIR = "is [height, width]"
NORMALIZE_GIVEN = "method given needs mean and std, one value per channel each"
NORMALIZE_NOT_GIVEN = "mean and std are used only with method given"
CHANNELS_OF_MODE = "mean and std need one value per channel of mode (L: 1, RGB: 3)"


class ImageNormalization(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.method) || self.method != 'given' || "
                    f"({_size('mean')} > 0 && {_size('mean')} == {_size('std')})",
                    NORMALIZE_GIVEN,
                ),
                _cel(
                    "(has(self.method) && self.method == 'given') || "
                    f"({_size('mean')} == 0 && {_size('std')} == 0)",
                    NORMALIZE_NOT_GIVEN,
                ),
            ]
        }
    )

    method: Literal["fit", "given", "none"] | None = Field(
        None,
        description="fit: each channel's mean and std, computed on the training split; "
        "given: the mean and std below (on pixels scaled to [0, 1]); none: pixels scaled to "
        "[0, 1] only. Unset means fit, except for a vae, which models pixels in [0, 1] (none).",
    )
    mean: list[Annotated[float, Field(ge=-1e6, le=1e6)]] = Field(
        default_factory=list, max_length=4, description="Per-channel mean, for method given."
    )
    std: list[Annotated[float, Field(gt=0, le=1e6)]] = Field(
        default_factory=list, max_length=4, description="Per-channel std, for method given."
    )

    @model_validator(mode="after")
    def _given_values(self) -> ImageNormalization:
        if self.method == "given":
            if not self.mean or len(self.mean) != len(self.std):
                raise ValueError(NORMALIZE_GIVEN)
        elif self.mean or self.std:
            raise ValueError(NORMALIZE_NOT_GIVEN)
        return self


class ImageAugmentation(ApiModel):
    """Random changes to each training image, drawn anew every epoch on the training
    workers: the validation split is never augmented, and no augmented copy is stored."""

    horizontalFlip: bool = Field(False, description="Mirror left-right with probability 0.5.")
    verticalFlip: bool = Field(False, description="Mirror top-bottom with probability 0.5.")
    cropPadding: int = Field(
        0,
        ge=0,
        le=256,
        description="Pad each side by this many pixels (zeros), then crop a random window "
        "of the image's size: random shifts of up to cropPadding pixels. 0 means off.",
    )


class ImageSpec(ApiModel):
    """How image files become model inputs. Decoding runs in parallel in Ray Data tasks; a
    file that does not decode is dropped and counted (status.dataStats.undecodable)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(f"{_size('size')} == 0 || {_size('size')} == 2", IMAGE_PAIR, ".size"),
                _cel(
                    f"{_size('minSize')} == 0 || {_size('minSize')} == 2",
                    IMAGE_PAIR,
                    ".minSize",
                ),
                _cel(
                    "!has(self.mode) || !has(self.normalize) || "
                    "!has(self.normalize.mean) || self.normalize.mean.size() == 0 || "
                    "self.normalize.mean.size() == (self.mode == 'L' ? 1 : 3)",
                    CHANNELS_OF_MODE,
                    ".normalize.mean",
                ),
            ]
        }
    )

    column: ColumnName | None = Field(
        None,
        description="For a table (csv, parquet, jsonl): the column that holds each image, as "
        "a path (absolute, a URI, or relative to the table's folder) or as the encoded "
        "file's bytes. Unset for format images.",
    )
    size: list[ImageSide] = Field(
        default_factory=list,
        max_length=2,
        description="[height, width] every image is brought to: scaled to cover it, keeping "
        "its aspect ratio, then centre-cropped. Empty means every image keeps its size, and "
        "all must have the same.",
    )
    mode: Literal["L", "RGB"] | None = Field(
        None,
        description="Channels every image is converted to: L (1, grey) or RGB (3). Unset "
        "keeps each image's own (grey stays 1 channel, colour 3, alpha is dropped); then all "
        "must agree.",
    )
    minSize: list[ImageSide] = Field(
        default_factory=list,
        max_length=2,
        description="[height, width]: smaller images (before resizing) are dropped and "
        "counted, like rows a cleaning rule drops.",
    )
    normalize: ImageNormalization = Field(
        default_factory=ImageNormalization, description="Per-channel normalization."
    )
    augment: ImageAugmentation = Field(
        default_factory=ImageAugmentation,
        description="Training-time augmentation, on the fly, training split only.",
    )

    @model_validator(mode="after")
    def _pairs_and_channels(self) -> ImageSpec:
        for name in ("size", "minSize"):
            if len(getattr(self, name)) not in (0, 2):
                raise nested_error(name, IMAGE_PAIR)
        given = self.normalize.mean
        if self.mode and given and len(given) != (1 if self.mode == "L" else 3):
            raise nested_error("normalize.mean", CHANNELS_OF_MODE)
        return self


SERIES_LABEL_NEEDS_GROUP = "labelPer series needs groupBy (the column that names each series)"
ORDER_NOT_GROUP = "orderBy and groupBy must be different columns"
TIME_NOT_TARGET = "orderBy and groupBy cannot be targets"


class SequenceSpec(ApiModel):
    """A long table (one row per time step) cut into windows by Ray Data, in parallel: each
    series (groupBy) is sorted by orderBy and cut into windows of `window` steps, every
    `stride` steps; no window spans two series. The validation split is by time within each
    series: its windows come after the training windows and never overlap them (with
    labelPer series, whole series are held out instead)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("self.labelPer != 'series' || has(self.groupBy)", SERIES_LABEL_NEEDS_GROUP),
                _cel("!has(self.groupBy) || self.groupBy != self.orderBy", ORDER_NOT_GROUP),
                _cel(
                    "!has(self.targets) || (!(self.orderBy in self.targets) && "
                    "(!has(self.groupBy) || !(self.groupBy in self.targets)))",
                    TIME_NOT_TARGET,
                    ".targets",
                ),
            ]
        }
    )

    window: int = Field(ge=1, le=10_000, description="Time steps in each input window.")
    horizon: int = Field(
        1, ge=1, le=1000, description="Regression: the steps after each window to forecast."
    )
    stride: int = Field(1, ge=1, le=10_000, description="Steps between window starts.")
    orderBy: ColumnName = Field(
        description="The time column: numbers, dates, or text that reads as dates."
    )
    groupBy: ColumnName | None = Field(
        None,
        description="The column that names each series (a device, a sensor); unset means the "
        "whole table is one series.",
    )
    targets: Columns = Field(
        default_factory=list,
        description="Regression: the columns to forecast, `horizon` steps each. They may "
        "also be features (their past values are then inputs).",
    )
    labelPer: Literal["window", "series"] = Field(
        "window",
        description="Classification: window takes the label at each window's last step; "
        "series takes the series' label (it must not change within a series), and the "
        "validation split holds out whole series.",
    )
    normalize: Literal["standard", "lastValue", "none"] = Field(
        "standard",
        description="How values are scaled for the model, with statistics of the training "
        "split: standard subtracts each column's mean; lastValue subtracts each window's "
        "last step, so that a forecast is a change from the last value seen (for series "
        "with a trend; the targets must also be features); both then divide by the "
        "standard deviation. none leaves the values as they are. Metrics are always in the "
        "data's own units.",
    )

    @model_validator(mode="after")
    def _columns_apart(self) -> SequenceSpec:
        if self.labelPer == "series" and self.groupBy is None:
            raise ValueError(SERIES_LABEL_NEEDS_GROUP)
        if self.groupBy is not None and self.groupBy == self.orderBy:
            raise ValueError(ORDER_NOT_GROUP)
        if self.orderBy in self.targets or (self.groupBy and self.groupBy in self.targets):
            raise nested_error("targets", TIME_NOT_TARGET)
        return self


SPLIT_VALUES_WITH_COLUMN = (
    "column and values go together: the rows whose column holds one of values validate"
)


class ValidationSplit(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(f"has(self.column) == ({_size('values')} > 0)", SPLIT_VALUES_WITH_COLUMN)
            ]
        }
    )

    fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of rows held out for validation (unused with column). Sequences "
        "hold out the last fraction of each series' time, or of the series (labelPer series).",
    )
    seed: int = Field(42, ge=0, description="Seed of the shuffle before the split.")
    column: ColumnName | None = Field(
        None,
        description="A split the data already has, such as a benchmark's own train/test: "
        "the rows (for a sequence with labelPer series, the series) whose value in this "
        "column is one of values validate; all others train.",
    )
    values: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=64,
        description="The column's values that mark validation rows, as text (a number as "
        "its digits: '3').",
    )

    @model_validator(mode="after")
    def _column_with_values(self) -> ValidationSplit:
        if (self.column is None) == bool(self.values):
            raise ValueError(SPLIT_VALUES_WITH_COLUMN)
        return self


#: The label column of the bundled and generated datasets.
BUILTIN_LABEL = "target"
BUILTIN_LABEL_ONLY = f"bundled and generated datasets have one label column, {BUILTIN_LABEL!r}"
LABEL_NOT_FEATURE = "the label cannot also be a feature"
#: The label column of images read from class folders (format images): the folder's name.
CLASS_FOLDER_LABEL = "class"
FOLDER_LABEL_ONLY = (
    f"images in class folders have one label column, {CLASS_FOLDER_LABEL!r} (the folder name)"
)
IMAGES_OR_SEQUENCE = "images and sequence cannot both be set"
IMAGES_NEED_FILES = "images are read from files: set source.uri"
IMAGE_COLUMN_RULE = (
    "format images reads class folders and takes no column; a table (csv, parquet, jsonl) "
    "needs images.column, the column with each image's path or bytes"
)
IMAGES_TAKE_NO_FEATURES = "the image is the input: features must be empty"
NO_TABLE_PREPROCESSING = (
    "preprocessing (impute, scale, encode) is for tables; images have images.normalize "
    "and sequences sequence.normalize"
)
#: A PersistentVolumeClaim's name, as the API server checks it (a DNS subdomain).
CLAIM_NAME: dict[str, Any] = {
    "min_length": 1,
    "max_length": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
}
DATA_CLAIM_PATH = (
    f"data.volumeClaim is mounted read-only at {DATA_MOUNT} in every Ray pod: source.uri.path "
    f"must be a path under {DATA_MOUNT}"
)
_IS_FOLDER = "(has(self.source.uri) && self.source.uri.format == 'images')"
_IS_IMAGES = f"(has(self.images) || {_IS_FOLDER})"
_NO_PREPROCESSING = (
    "(!has(self.preprocessing) || "
    + " && ".join(
        f"(!has(self.preprocessing.{k}) || self.preprocessing.{k}.size() == 0)"
        for k in ("impute", "scale", "encode")
    )
    + ")"
)


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
                _cel("!has(self.images) || !has(self.sequence)", IMAGES_OR_SEQUENCE, ".images"),
                _cel("!has(self.images) || has(self.source.uri)", IMAGES_NEED_FILES, ".images"),
                _cel(
                    "!has(self.images) || !has(self.source.uri) || "
                    "(self.source.uri.format == 'images' ? !has(self.images.column) : "
                    "(has(self.images.column) && self.source.uri.format != 'numpy'))",
                    IMAGE_COLUMN_RULE,
                    ".images.column",
                ),
                _cel(
                    f"!{_IS_FOLDER} || !has(self.label) || self.label == '{CLASS_FOLDER_LABEL}'",
                    FOLDER_LABEL_ONLY,
                    ".label",
                ),
                _cel(
                    f"!{_IS_IMAGES} || !has(self.features) || self.features.size() == 0",
                    IMAGES_TAKE_NO_FEATURES,
                    ".features",
                ),
                _cel(
                    f"!({_IS_IMAGES} || has(self.sequence)) || {_NO_PREPROCESSING}",
                    NO_TABLE_PREPROCESSING,
                    ".preprocessing",
                ),
                _cel(
                    "!has(self.volumeClaim) || (has(self.source.uri) && "
                    f"(self.source.uri.path == '{DATA_MOUNT}' || "
                    f"self.source.uri.path.startsWith('{DATA_MOUNT}/')))",
                    DATA_CLAIM_PATH,
                    ".source.uri.path",
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
        description="Feature columns, in order. Empty means every column except the label "
        "(and, for sequences, the time and series columns).",
    )
    label: ColumnName | None = Field(
        None,
        description="Label column. Bundled and generated datasets name theirs 'target', "
        "images in class folders 'class'. Not needed for generation (VAE) or for a sequence "
        "forecast (sequence.targets).",
    )
    validation: ValidationSplit = Field(
        default_factory=ValidationSplit, description="Train/validation split."
    )
    volumeClaim: str | None = Field(
        None,
        **CLAIM_NAME,
        description=f"A PersistentVolumeClaim in the job's namespace that holds the data, "
        f"mounted read-only at {DATA_MOUNT} in every Ray pod; source.uri.path then names a "
        f"path under {DATA_MOUNT}. For kubetrain run, that path on this machine.",
    )
    images: ImageSpec | None = Field(
        None,
        description="Image inputs: decoding, cleaning and preprocessing of image files. "
        "Implied (with its defaults) by format images.",
    )
    sequence: SequenceSpec | None = Field(
        None, description="Time series: cut a long table into windows, per series."
    )

    @model_validator(mode="after")
    def _label_fits_source(self) -> DataSpec:
        if self.source.uri is None and self.label not in (None, BUILTIN_LABEL):
            raise nested_error("label", BUILTIN_LABEL_ONLY)
        if self.label is not None and self.label in self.features:
            raise nested_error("features", LABEL_NOT_FEATURE)
        return self

    @model_validator(mode="after")
    def _images_and_sequences(self) -> DataSpec:
        uri = self.source.uri
        folder = uri is not None and uri.format == "images"
        if self.images is not None and self.sequence is not None:
            raise nested_error("images", IMAGES_OR_SEQUENCE)
        if self.images is not None and uri is None:
            raise nested_error("images", IMAGES_NEED_FILES)
        if self.images is not None and uri is not None:
            column = self.images.column is not None
            if column == folder or (not folder and uri.format == "numpy"):
                raise nested_error("images.column", IMAGE_COLUMN_RULE)
        if folder and self.label not in (None, CLASS_FOLDER_LABEL):
            raise nested_error("label", FOLDER_LABEL_ONLY)
        images = self.images is not None or folder
        if images and self.features:
            raise nested_error("features", IMAGES_TAKE_NO_FEATURES)
        pre = self.preprocessing
        if (images or self.sequence is not None) and (pre.impute or pre.scale or pre.encode):
            raise nested_error("preprocessing", NO_TABLE_PREPROCESSING)
        data_path = uri.path if uri is not None else ""
        if self.volumeClaim is not None and not within_mount(data_path, DATA_MOUNT):
            raise nested_error("source.uri.path", DATA_CLAIM_PATH)
        return self

    @property
    def image_spec(self) -> ImageSpec | None:
        """The image settings: the section, or its defaults for format images."""
        if self.images is not None:
            return self.images
        uri = self.source.uri
        return ImageSpec() if uri is not None and uri.format == "images" else None


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
    pooling: Literal["last", "mean", "max"] = Field(
        "last",
        description="What the output layer reads: the last step's state (last), or the "
        "mean or maximum of every step's state, which learns far more readily on long "
        "sequences (a motion's 150-step trace, say).",
    )


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


#: The keys a storage Secret may hold, each given to the Ray pods as the variable of its name.
STORAGE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class StorageSpec(ApiModel):
    """How the job reaches an object store (s3:// data, outputs and checkpoints)."""

    secretName: DnsSubdomain | None = Field(
        None,
        description="A Secret in the job's namespace with the object store's credentials: "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, if present). "
        "The Ray pods get them as environment variables; they never reach status, Events "
        "or logs. Unset means the pods' own identity (an IAM role, workload identity). "
        "Ignored by kubetrain run, which uses the caller's AWS environment.",
    )
    endpoint: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://[^\s/]+(/.*)?$",
        description="The S3 API's address for an S3-compatible store (MinIO, SeaweedFS, "
        "Ceph, R2), such as http://minio.storage:9000. Unset means AWS.",
    )
    region: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[a-z0-9-]+$",
        description="The bucket's region, such as eu-west-1.",
    )


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
        **CLAIM_NAME,
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


LABEL_REQUIRED = (
    "is required to train on files, except for vae, images in class folders (their label "
    "is the folder) and sequence forecasts (sequence.targets)"
)
IMAGE_MODELS = ("cnn", "mlp", "vae")
SEQUENCE_MODELS = ("rnn", "mlp")
IMAGES_NEED_MODEL = "images are read by model type cnn, mlp or vae"
SEQUENCE_NEEDS_MODEL = "sequence windows are read by model type rnn or mlp"
FORECAST_TARGETS = (
    "a sequence regression forecasts sequence.targets (set at least one) and takes no label"
)
WINDOW_LABELS = "a sequence classification needs data.label and no sequence.targets"
SERIES_SPLIT_ONLY = (
    "a sequence is split by a column only with labelPer series (whole series validate); "
    "windows and forecasts are split by time (validation.fraction)"
)
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
                    " || self.model.type == 'vae' || self.data.source.uri.format == 'images'"
                    f" || (has(self.data.sequence) && {_TASK_OF} == 'regression')",
                    f"data.label {LABEL_REQUIRED}",
                    ".data.label",
                ),
                _cel(_STOPPING_RULE, STOPPING_METRIC_UNKNOWN, ".training.earlyStopping.metric"),
                _cel(
                    "!(has(self.data.images) || (has(self.data.source.uri) && "
                    "self.data.source.uri.format == 'images')) || "
                    f"self.model.type in {list(IMAGE_MODELS)}",
                    IMAGES_NEED_MODEL,
                    ".model.type",
                ),
                _cel(
                    f"!has(self.data.sequence) || self.model.type in {list(SEQUENCE_MODELS)}",
                    SEQUENCE_NEEDS_MODEL,
                    ".model.type",
                ),
                _cel(
                    f"!has(self.data.sequence) || {_TASK_OF} != 'regression' || "
                    "(has(self.data.sequence.targets) && self.data.sequence.targets.size() > 0 "
                    "&& !has(self.data.label))",
                    FORECAST_TARGETS,
                    ".data.sequence.targets",
                ),
                _cel(
                    "!has(self.data.sequence) || !has(self.data.validation) || "
                    "!has(self.data.validation.column) || "
                    f"({_TASK_OF} == 'classification' && self.data.sequence.labelPer == 'series')",
                    SERIES_SPLIT_ONLY,
                    ".data.validation.column",
                ),
                _cel(
                    f"!has(self.data.sequence) || {_TASK_OF} != 'classification' || "
                    "(has(self.data.label) && (!has(self.data.sequence.targets) || "
                    "self.data.sequence.targets.size() == 0))",
                    WINDOW_LABELS,
                    ".data.label",
                ),
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
    storage: StorageSpec = Field(
        default_factory=StorageSpec,
        description="Credentials and endpoint of the object store that s3:// URIs name.",
    )

    @model_validator(mode="after")
    def _label_needed(self) -> TrainingJobSpec:
        data, task = self.data, self.model.effective_task
        uri = data.source.uri
        exempt = (
            self.model.type == "vae"
            or (uri is not None and uri.format == "images")
            or (data.sequence is not None and task == "regression")
        )
        if uri is not None and not data.label and not exempt:
            raise nested_error("data.label", LABEL_REQUIRED)
        return self

    @model_validator(mode="after")
    def _inputs_fit_model(self) -> TrainingJobSpec:
        data, model, task = self.data, self.model, self.model.effective_task
        if data.image_spec is not None and model.type not in IMAGE_MODELS:
            raise nested_error("model.type", IMAGES_NEED_MODEL)
        sequence = data.sequence
        if sequence is None:
            return self
        if model.type not in SEQUENCE_MODELS:
            raise nested_error("model.type", SEQUENCE_NEEDS_MODEL)
        if task == "regression" and (not sequence.targets or data.label is not None):
            raise nested_error("data.sequence.targets", FORECAST_TARGETS)
        if task == "classification" and (data.label is None or sequence.targets):
            raise nested_error("data.label", WINDOW_LABELS)
        by_series = task == "classification" and sequence.labelPer == "series"
        if data.validation.column is not None and not by_series:
            raise nested_error("data.validation.column", SERIES_SPLIT_ONLY)
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


#: Entries kept in status for per-class counts and image sizes (the data report has all).
MAX_STATUS_CLASSES = 100
MAX_STATUS_SIZES = 10
#: Names of undecodable (or missing) files kept in status and the report.
MAX_BAD_FILES = 5


class SizeCount(StatusModel):
    size: str = Field(description="An image's size as read, height x width (such as 480x640).")
    count: int = Field(description="Images of that size.")


class ImageStats(StatusModel):
    shape: list[int] = Field(
        default_factory=list, description="What the model reads: [channels, height, width]."
    )
    sizesSeen: list[SizeCount] = Field(
        default_factory=list,
        max_length=MAX_STATUS_SIZES,
        description=f"The most common sizes as read, before resizing (up to {MAX_STATUS_SIZES}).",
    )
    distinctSizes: int | None = Field(None, description="How many different sizes were read.")
    channelMeans: list[float] = Field(
        default_factory=list, description="Mean of each channel, pixels scaled to [0, 1]."
    )
    undecodable: int | None = Field(None, description="Files that did not decode, dropped.")
    missing: int | None = Field(None, description="Paths that named no file, dropped.")
    badFiles: list[str] = Field(
        default_factory=list,
        max_length=MAX_BAD_FILES,
        description=f"The first {MAX_BAD_FILES} files dropped as undecodable or missing.",
    )


class SequenceStats(StatusModel):
    series: int | None = Field(None, description="Series long enough for a window.")
    seriesDropped: int | None = Field(
        None, description="Series shorter than one window (and horizon), dropped."
    )
    longestSeries: int | None = Field(None, description="Time steps of the longest series.")
    window: int | None = Field(None, description="Steps per window.")
    features: int | None = Field(None, description="Values per step.")


class DataStats(StatusModel):
    rowsRead: int | None = Field(None, description="Rows read from the source.")
    rowsAfterCleaning: int | None = Field(None, description="Rows left after cleaning.")
    droppedByRule: list[RuleDrop] = Field(
        default_factory=list, description="Rows dropped per rule."
    )
    trainRows: int | None = Field(
        None, description="Samples in the training split (rows; windows for sequences)."
    )
    validationRows: int | None = Field(
        None, description="Samples in the validation split (rows; windows for sequences)."
    )
    classCounts: dict[str, int] | None = Field(
        None,
        max_length=MAX_STATUS_CLASSES,
        description=f"Samples per class after cleaning (the {MAX_STATUS_CLASSES} largest).",
    )
    images: ImageStats | None = Field(None, description="Image sizes, channels and bad files.")
    sequences: SequenceStats | None = Field(None, description="Series and windows.")


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
