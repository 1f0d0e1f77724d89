"""Whether a VAE's samples look like its data, measured instead of eyeballed.

A small classifier (an RBF support-vector machine with Platt-scaled probabilities) is
fitted on the real rows of a labelled source,
encoded by the job's own fitted preprocessors, and then labels samples decoded from the
prior. Samples that look like the data get confident labels, and samples that cover the
data get every label: the mean confidence and the number of classes covered are a cheap
relative of the Inception score, cheap enough for every run. Two controls frame the figure:
the judge's confidence on real held-out rows (the ceiling) and on uniform noise over the
features' range (the floor). Of the judges tried on digits, the SVC was both the most
accurate (0.98 held out) and the least confident on noise (0.22); a logistic regression
gave noise 0.55, and a small neural net 0.90 on noise against 0.98 on digits, which would
make the figure meaningless. Sources without labels get no figure.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from kubetrain.api.v1alpha1 import TrainingJob
from kubetrain_runtime.data.pipeline import PreparedData
from kubetrain_runtime.plan import TrainPlan

#: Samples drawn from the prior for the measure.
SAMPLES = 1000


def labelled_rows(job: TrainingJob, prepared: PreparedData) -> tuple[np.ndarray, np.ndarray] | None:
    """The source's rows as model inputs (``x``) with their class (``y``), or None."""
    source = job.spec.data.source
    if source.builtin is None:
        return None
    import ray.data

    from kubetrain_runtime.data import preprocess
    from kubetrain_runtime.data.sources import TARGET, builtin_frame

    frame = builtin_frame(source.builtin.name)
    if frame.class_names is None or TARGET not in frame.df:
        return None
    to_xy = partial(
        preprocess.to_xy, lists=prepared.features.list_features, label=TARGET, label_dtype="int64"
    )
    encoded = prepared.preprocessor.transform(ray.data.from_pandas(frame.df))
    batch = encoded.map_batches(to_xy, batch_format="numpy").take_batch(
        len(frame.df), batch_format="numpy"
    )
    return batch[preprocess.FEATURES], batch[preprocess.LABEL]


def sample_quality(
    job: TrainingJob, plan: TrainPlan, prepared: PreparedData, state_dict: dict[str, Any]
) -> dict[str, Any] | None:
    """``metrics.json``'s ``sampleQuality`` for a VAE trained on labelled data."""
    rows = labelled_rows(job, prepared)
    if rows is None:
        return None
    import torch
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    from kubetrain_runtime.models import build_model

    x, y = rows
    x_fit, x_held, y_fit, y_held = train_test_split(
        x, y, test_size=0.2, random_state=plan.seed, stratify=y
    )
    classifier = SVC(probability=True, random_state=plan.seed).fit(x_fit, y_fit)
    model = build_model(plan)
    model.load_state_dict(state_dict)
    model.eval()
    generator = torch.Generator().manual_seed(plan.seed + 1)
    with torch.no_grad():
        z = torch.randn(SAMPLES, model.latent, generator=generator)
        decoded = model.decode(z)
        if plan.likelihood == "bernoulli":
            decoded = torch.sigmoid(decoded)
    probabilities = classifier.predict_proba(decoded.numpy())
    labels = classifier.classes_[probabilities.argmax(axis=1)]
    counts = np.bincount(labels, minlength=len(classifier.classes_))
    return {
        "method": "an RBF SVC fitted on the real rows labels samples from the prior",
        "samples": SAMPLES,
        "meanConfidence": round(float(probabilities.max(axis=1).mean()), 4),
        "classesCovered": int((counts > 0).sum()),
        "classes": len(classifier.classes_),
        "samplesPerClass": counts.tolist(),
        "classifierHeldOutAccuracy": round(float(classifier.score(x_held, y_held)), 4),
        "classifierConfidenceOnRealRows": _confidence(classifier, x_held),
        "classifierConfidenceOnNoise": _confidence(classifier, _noise(x, plan.seed)),
    }


def _confidence(classifier: Any, x: np.ndarray) -> float:
    return round(float(classifier.predict_proba(x).max(axis=1).mean()), 4)


def _noise(x: np.ndarray, seed: int) -> np.ndarray:
    """Uniform noise over each feature's observed range."""
    rng = np.random.default_rng(seed)
    return rng.uniform(x.min(axis=0), x.max(axis=0), size=(SAMPLES, x.shape[1]))
