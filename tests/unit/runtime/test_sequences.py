"""Windows from one series: order by time, windows and their targets, a split by time that
never lets a validation window overlap a training one, whole series held out by label,
and short series counted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kubetrain.errors import DataError
from kubetrain_runtime.data import sequences
from kubetrain_runtime.data.sequences import SPLIT, SUMMARY, TRAIN, VALIDATION, WindowPlan

pytestmark = pytest.mark.unit


def series(rows: int, key: str = "d1", shuffle: bool = True) -> pd.DataFrame:
    t = np.arange(rows)
    frame = pd.DataFrame({"device": key, "t": t, "a": t.astype(float), "b": -t.astype(float),
                          "label": np.where(t % 10 < 5, "low", "high")})  # fmt: skip
    return frame.sample(frac=1, random_state=0) if shuffle else frame


def forecast(**overrides) -> WindowPlan:
    settings = {"window": 4, "horizon": 2, "stride": 1, "order_by": "t", "group_by": "device",
                "features": ("a", "b"), "targets": ("a",), "fraction": 0.25}  # fmt: skip
    return WindowPlan(**(settings | overrides))


def windows(frame: pd.DataFrame, plan: WindowPlan) -> dict[str, np.ndarray]:
    batches = list(sequences.series_windows(frame, plan))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_windows_are_sorted_by_time_and_forecast_what_follows():
    out = windows(series(40), forecast())
    kept = out[SPLIT] != SUMMARY
    x, y = out["x"][kept].reshape(-1, 4, 2), out["y"][kept]
    first = x[0]
    assert first[:, 0].tolist() == [0, 1, 2, 3] and first[:, 1].tolist() == [0, -1, -2, -3]
    assert y[0].tolist() == [4, 5]  # the next horizon values of the target
    assert all((w[1:, 0] - w[:-1, 0] == 1).all() for w in x)  # each window in time order


def test_the_split_by_time_leaves_no_overlap_and_validation_comes_after():
    plan = forecast()
    out = windows(series(40), plan)
    starts = out["x"][:, 0]  # feature a at a window's first step is its start time
    train = starts[out[SPLIT] == TRAIN]
    validation = starts[out[SPLIT] == VALIDATION]
    assert len(train) and len(validation)
    last_train_row = train.max() + plan.span - 1
    assert validation.min() > last_train_row  # no row of a training sample validates
    assert validation.min() == 30  # the last quarter of the 40 rows


def test_stride_and_the_summary_row():
    out = windows(series(40), forecast(stride=3))
    starts = out["x"][out[SPLIT] == TRAIN][:, 0]
    assert (np.diff(starts) == 3).all()
    summary = out[sequences.LENGTH][out[SPLIT] == SUMMARY]
    assert summary.tolist() == [40]


def test_a_short_series_yields_only_its_summary_and_is_counted():
    plan = forecast(window=30, horizon=20)
    out = windows(series(40), plan)
    assert out[SPLIT].tolist() == [SUMMARY]
    counts = sequences.counts_partial(out, window=plan.span)
    assert counts | {} == {"train": 0, "validation": 0, "series": 0, "seriesDropped": 1,
                           "rowsDropped": 40, "longest": 40}  # fmt: skip


def test_a_series_too_short_to_split_trains_whole():
    out = windows(series(8), forecast())  # 8 rows: room for samples, not for two splits
    assert set(out[SPLIT].tolist()) == {TRAIN, SUMMARY}


def test_labels_per_window_take_the_last_step():
    plan = forecast(targets=(), label="label", classes={"high": 0, "low": 1}, horizon=1)
    out = windows(series(40, shuffle=False), plan)
    kept = out[SPLIT] != SUMMARY
    last_t = out["x"][kept].reshape(-1, 4, 2)[:, -1, 0].astype(int)
    expected = np.where(last_t % 10 < 5, 1, 0)
    assert out["y"][kept].tolist() == expected.tolist()


def test_labels_per_series_hold_out_whole_series_by_hash_or_by_column():
    plan = WindowPlan(window=5, horizon=1, stride=5, order_by="t", group_by="device",
                      features=("a",), label="kind", label_per="series",
                      classes={"x": 0, "y": 1}, fraction=0.5, seed=1)  # fmt: skip
    splits = {}
    for key in ("s1", "s2", "s3", "s4", "s5", "s6"):
        frame = series(20, key).assign(kind="x" if key < "s4" else "y")
        out = windows(frame, plan)
        kept = out[SPLIT] != SUMMARY
        assert len(set(out[SPLIT][kept].tolist())) == 1  # a series is on one side
        splits[key] = int(out[SPLIT][kept][0])
    assert set(splits.values()) == {TRAIN, VALIDATION}
    assert splits == {k: int(sequences.held_out(k, 1, 0.5)) for k in splits}
    by_column = WindowPlan(**{**plan.__dict__, "split_column": "fold",
                              "split_values": frozenset({"test"})})  # fmt: skip
    out = windows(series(20, "s1").assign(kind="x", fold="test"), by_column)
    assert set(out[SPLIT].tolist()) == {VALIDATION, SUMMARY}
    mixed = series(20, "s1").assign(kind="x", fold=["test", "train"] * 10)
    with pytest.raises(DataError) as raised:
        windows(mixed, by_column)
    assert raised.value.field == "spec.data.validation.column"
    changing = series(20, "s1")  # its label changes within the series
    with pytest.raises(DataError) as raised:
        windows(changing, WindowPlan(**{**plan.__dict__, "label": "label",
                                        "classes": {"high": 0, "low": 1}}))  # fmt: skip
    assert raised.value.field == "spec.data.sequence.labelPer"


def test_time_order_reads_numbers_dates_and_date_text_and_refuses_the_rest():
    assert sequences.time_order(pd.Series([3, 1, 2])).tolist() == [3, 1, 2]
    text = sequences.time_order(pd.Series(["2021-01-03", "2021-01-01"]))
    assert text[0] > text[1]
    for bad in (pd.Series(["monday", "tuesday"]), pd.Series([True, False]),
                pd.Series([1.0, None])):  # fmt: skip
        with pytest.raises(DataError) as raised:
            sequences.time_order(bad)
        assert raised.value.field == "spec.data.sequence.orderBy"


def test_moments_of_values_and_of_changes_from_the_last_step():
    plan = forecast()
    out = windows(series(40), plan)
    train = {k: v[out[SPLIT] == TRAIN] for k, v in out.items()}
    mean, std = sequences.moments([sequences.moments_partial(train, 2, 1)])
    x = train["x"].reshape(-1, 2)
    assert mean == pytest.approx(x.mean(0)) and std == pytest.approx(x.std(0))
    parts = [sequences.moments_partial(train, 2, 1, relative=True, target_columns=(0,))]
    _, ystd = sequences.moments(parts, "y")
    deltas = train["y"] - train["x"].reshape(-1, 4, 2)[:, -1:, 0]
    assert ystd == pytest.approx([deltas.std()])
