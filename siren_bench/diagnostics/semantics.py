"""Semantic richness per RVQ layer (the paper's second diagnosis), as linear-probe scores.

Each clip is summarised by the mean and standard deviation over frames of a layer's quantized
vectors ("alone"), or of the sum of layers 1..k ("cumulative", the partial latent a decoder
would see). A linear probe (one-vs-rest logistic regression on standardised features) trained
on the training clips predicts the clip's class labels on held-out clips; its macro average
precision (mAP) measures how much caption content the features carry. Repeating with
bootstrap-resampled training sets (one per seed) gives the error bars. Chance is the mAP of a
random scorer on the same held-out labels (a permutation null: mean and 95th percentile).

For data without class labels (AudioCaps) the probe instead regresses the caption's text
embedding (ridge regression) and is scored by held-out R^2 (variance-weighted; 0 is the
mean-embedding predictor) and by the mean cosine between predicted and true embeddings, next to
the cosine the mean-embedding predictor gets. It uses repeated random 80/20 splits of the clips,
one per seed, so it needs no train split.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import average_precision_score, f1_score, r2_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def pool(features: np.ndarray) -> np.ndarray:
    """[..., D, F] -> [..., 2D]: mean and std over frames."""
    features = np.asarray(features, dtype=np.float64)
    return np.concatenate([features.mean(axis=-1), features.std(axis=-1)], axis=-1)


def pooled_layers(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, K, D, F] per-layer vectors -> (alone [N, K, 2D], cumulative [N, K, 2D]) pooled
    features: each layer by itself, and the running sum of layers 1..k."""
    features = np.asarray(features, dtype=np.float64)
    return pool(features), pool(np.cumsum(features, axis=1))


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seeds: list[int]) -> dict:
    """mAP and macro-F1 of a linear probe, one fit per seed on a bootstrap of the training set."""
    keep = usable_classes(train_y, test_y)
    train_y, test_y = train_y[:, keep], test_y[:, keep]
    maps, f1s = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for _ in range(1000):  # every class needs a positive and a negative in the resample to fit
            rows = rng.integers(0, len(train_x), size=len(train_x))
            positives = train_y[rows].sum(axis=0)
            if np.all((positives > 0) & (positives < len(rows))):
                break
        else:
            raise ValueError("no bootstrap resample of the training clips contains every class; use more clips")
        probe = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(C=0.5, max_iter=2000)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(train_x[rows], train_y[rows])
        scores = probe.predict_proba(test_x)
        maps.append(average_precision_score(test_y, scores, average="macro"))
        f1s.append(f1_score(test_y, (scores >= 0.5).astype(int), average="macro", zero_division=0))
    return {
        "map_mean": float(np.mean(maps)), "map_std": float(np.std(maps, ddof=1)) if len(maps) > 1 else 0.0,
        "f1_mean": float(np.mean(f1s)), "f1_std": float(np.std(f1s, ddof=1)) if len(f1s) > 1 else 0.0,
        "map_per_seed": [float(v) for v in maps],
    }


def usable_classes(train_y: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """Classes a probe can be fitted and scored on: positives and negatives in both sets."""
    def both(y):
        return (y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y))
    keep = both(train_y) & both(test_y)
    if not keep.any():
        raise ValueError("no class has positive and negative clips in both the probe's training and evaluation sets")
    return keep


def macro_average_precision(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Macro-averaged average precision of score sets [..., N, C] against labels y [N, C] (every
    class with a positive), vectorised over the leading axes: per class, the mean over positives of
    the precision among the clips scored at least as high. Equals sklearn's average_precision_score
    (average="macro") for untied scores (tested); the permutation null scores 2000 random sets,
    which took sklearn 20 s one call at a time."""
    order = np.argsort(-scores, axis=-2, kind="stable")
    ranked = np.take_along_axis(np.broadcast_to(y, scores.shape).astype(np.float64), order, axis=-2)
    hits = np.cumsum(ranked, axis=-2)
    precision = hits / np.arange(1, y.shape[0] + 1)[:, None]
    per_class = (precision * ranked).sum(axis=-2) / y.sum(axis=0)
    return per_class.mean(axis=-1)


def chance_map(train_y: np.ndarray, test_y: np.ndarray, n_permutations: int = 2000, seed: int = 0) -> dict:
    """mAP of a random scorer on these held-out labels (a permutation null): its mean and 95th
    percentile. Not the class prevalence, which a random scorer's mAP exceeds on small sets."""
    y = test_y[:, usable_classes(train_y, test_y)]
    rng = np.random.default_rng(seed)
    null = macro_average_precision(y, rng.random((n_permutations, *y.shape)))
    return {"mean": float(null.mean()), "p95": float(np.quantile(null, 0.95)), "n_permutations": n_permutations,
            "prevalence": float(y.mean(axis=0).mean())}


def semantic_richness(train: tuple[np.ndarray, np.ndarray], train_y: np.ndarray,
                      test: tuple[np.ndarray, np.ndarray], test_y: np.ndarray, seeds: list[int]) -> dict:
    """Per layer k: probe scores of layer k alone and of layers 1..k summed.

    `train` and `test` are the (alone, cumulative) pooled features of `pooled_layers`;
    labels are multi-hot [N, C].
    """
    (train_alone, train_cum), (test_alone, test_cum) = train, test
    alone = [probe_scores(train_alone[:, k], train_y, test_alone[:, k], test_y, seeds) for k in range(train_alone.shape[1])]
    cumulative = [probe_scores(train_cum[:, k], train_y, test_cum[:, k], test_y, seeds) for k in range(train_cum.shape[1])]
    return {"alone": alone, "cumulative": cumulative, "chance_map": chance_map(train_y, test_y), "seeds": list(seeds),
            "classes_scored": usable_classes(train_y, test_y).tolist(),
            "n_train": int(len(train_y)), "n_test": int(len(test_y))}


def text_probe_scores(x: np.ndarray, targets: np.ndarray, seeds: list[int], eval_fraction: float = 0.2) -> dict:
    """Ridge regression from clip features to caption embeddings, on one random split per seed."""
    r2s, cosines, baselines = [], [], []
    n_eval = max(1, int(round(eval_fraction * len(x))))
    if len(x) - n_eval < 2:
        raise ValueError(f"a text probe needs at least 3 clips, got {len(x)}")
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(x))
        test, train = order[:n_eval], order[n_eval:]
        probe = make_pipeline(StandardScaler(), Ridge(alpha=10.0))
        probe.fit(x[train], targets[train])
        predicted = probe.predict(x[test])
        mean_embedding = np.broadcast_to(targets[train].mean(axis=0), predicted.shape)
        r2s.append(r2_score(targets[test], predicted, multioutput="variance_weighted"))
        cosines.append(_mean_cosine(predicted, targets[test]))
        baselines.append(_mean_cosine(mean_embedding, targets[test]))
    return {
        "r2_mean": float(np.mean(r2s)), "r2_std": float(np.std(r2s, ddof=1)) if len(r2s) > 1 else 0.0,
        "cosine_mean": float(np.mean(cosines)), "cosine_std": float(np.std(cosines, ddof=1)) if len(cosines) > 1 else 0.0,
        "mean_embedding_cosine": float(np.mean(baselines)), "r2_per_seed": [float(v) for v in r2s],
    }


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).mean())


def text_richness(features: tuple[np.ndarray, np.ndarray], targets: np.ndarray, seeds: list[int]) -> dict:
    """Per layer k: text-probe scores of layer k alone and of layers 1..k summed."""
    alone, cumulative = features
    return {
        "alone": [text_probe_scores(alone[:, k], targets, seeds) for k in range(alone.shape[1])],
        "cumulative": [text_probe_scores(cumulative[:, k], targets, seeds) for k in range(cumulative.shape[1])],
        "seeds": list(seeds), "n_clips": int(len(targets)), "embedding_dim": int(targets.shape[1]),
    }
