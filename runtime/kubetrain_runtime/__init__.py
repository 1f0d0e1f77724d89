"""kubetrain's runtime: one TrainingJob, run on Ray, locally or as a cluster's Ray job.

The pipeline, in the order a run goes through it (the modules' docstrings say no
numbers: this map is the one order):

    data/read.py        source → Ray Dataset (bundled, generated, csv/parquet/jsonl/numpy)
    data/clean.py       casts, dropNulls, filters, clip, dropDuplicates, counted per rule
    data/stats.py       describe-style column statistics, merged from per-block partials
    data/preprocess.py  features and label, Ray Data preprocessors fitted on the train split
    data/pipeline.py    the data stage end to end, materialized for the workers
    models.py           one factory for cnn, rnn, vae and mlp, shaped by the data
    train_loop.py       the per-worker loop (all-reduced metrics, checkpoints, resume)
    trainer.py          TorchTrainer setup, the resume policy, epoch events to the driver
    outputs.py          model, metrics.json, data report and plots, through fsspec
    reporting.py        the Reporter interface and its log/collecting implementations
    driver_log.py       the driver's output, copied line by line to the output location
    job.py              the whole run; local.py (``kubetrain run``) and entrypoint.py
                        (the cluster's Ray job) only choose Ray, reporter and output

Pure decisions (worker sizing, resume, rules against the schema, stats math) live in
``plan.py``, ``data/rules.py``, ``data/stats.py`` and ``kubetrain/api/columns.py`` and need
no Ray.
"""
