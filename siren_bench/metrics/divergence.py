"""KL divergence between per-clip class distributions, and the Inception Score.

Both take classifier logits (PANNs' 527 AudioSet classes, or the smoke tagger's), apply a
softmax in float64, and never substitute a value for a failure.

KL is computed per clip between the reference clip's distribution and the generated clip's,
paired by clip id: a generated clip without its reference (or the reverse) is an error, not a
silent skip. `direction` "ref_gen" is KL(reference || generated) (audioldm_eval, audiocraft),
"gen_ref" is KL(generated || reference) (stable-audio-metrics). `eps` > 0 reproduces
audioldm_eval's log(q + eps) on the second argument; eps = 0 uses exact log-softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax, softmax

from siren_bench.metrics.base import MetricInputs, clip_logits
from siren_bench.metrics.bootstrap import bootstrap
from siren_bench.metrics.jackknife import GROUPS, jackknife
from siren_bench.registry import METRICS

DIRECTIONS = ("ref_gen", "gen_ref")


def kl(p: np.ndarray, q: np.ndarray, eps: float = 0.0, log_p: np.ndarray | None = None, log_q: np.ndarray | None = None) -> np.ndarray:
    """Row-wise KL(p || q) in nats for probability rows [n, C] (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"distributions differ in shape: {p.shape} vs {q.shape}")
    lp = np.log(np.where(p > 0, p, 1.0)) if log_p is None else log_p
    if eps > 0:  # audioldm_eval's form: the eps sits inside the log of the second argument
        lq = np.log(q + eps)
    else:
        with np.errstate(divide="ignore"):  # log 0 = -inf: KL is infinite where q misses p's support
            lq = np.log(q) if log_q is None else log_q
    return np.sum(p * np.where(p > 0, lp - lq, 0.0), axis=-1)  # masked before the product: no 0 * inf


@dataclass(frozen=True)
class PairedKL:
    clip_ids: list[str]
    per_clip: np.ndarray  # nats
    direction: str
    eps: float

    @property
    def mean(self) -> float:
        return float(self.per_clip.mean())


def paired_kl(reference: dict[str, np.ndarray], generated: dict[str, np.ndarray], direction: str = "ref_gen",
              eps: float = 0.0) -> PairedKL:
    """KL per clip id from {clip_id: logits [C]} of both sets; ids must match exactly."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown KL direction {direction!r}; choose one of {DIRECTIONS}")
    missing_gen = sorted(set(reference) - set(generated))
    missing_ref = sorted(set(generated) - set(reference))
    if missing_gen or missing_ref:
        parts = []
        if missing_gen:
            parts.append(f"{len(missing_gen)} reference clips have no generated clip (e.g. {', '.join(missing_gen[:3])})")
        if missing_ref:
            parts.append(f"{len(missing_ref)} generated clips have no reference clip (e.g. {', '.join(missing_ref[:3])})")
        raise ValueError("KL pairs clips by id: " + "; ".join(parts))
    ids = sorted(reference)
    ref_logits = np.stack([np.asarray(reference[i], dtype=np.float64).reshape(-1) for i in ids])
    gen_logits = np.stack([np.asarray(generated[i], dtype=np.float64).reshape(-1) for i in ids])
    first, second = (ref_logits, gen_logits) if direction == "ref_gen" else (gen_logits, ref_logits)
    values = kl(softmax(first, axis=-1), softmax(second, axis=-1), eps,
                log_p=log_softmax(first, axis=-1), log_q=log_softmax(second, axis=-1))
    return PairedKL(ids, values, direction, eps)


@dataclass(frozen=True)
class InceptionScore:
    mean: float
    std: float
    splits: int
    seed: int | None
    per_split: list[float]


IS_SHUFFLERS = ("default_rng", "randomstate")  # np.random.default_rng(seed) | np.random.RandomState(seed) (audioldm_eval)
IS_CHUNKS = ("array_split", "floor")  # np.array_split | rows i*N//splits to (i+1)*N//splits (audioldm_eval)


def inception_score(logits: np.ndarray, splits: int = 10, seed: int | None = 2020, shuffle: bool = True,
                    shuffler: str = "default_rng", chunks: str = "array_split") -> InceptionScore:
    """exp(E_x KL(p(y|x) || p(y))) per split; mean and (population) std over splits.

    The clips are permuted with `seed` before splitting, by `shuffler`; `shuffle=False` keeps the
    given order. `chunks` says where the splits are cut: np.array_split puts the N % splits extra
    clips in the first splits, "floor" cuts at i * N // splits. audioldm_eval (and
    torch-fidelity) permute with np.random.RandomState(2020) and cut at the floors: at N = 964 the
    two ways give different splits, hence a different mean and std. p(y) is each split's mean
    distribution.
    """
    if shuffler not in IS_SHUFFLERS or chunks not in IS_CHUNKS:
        raise ValueError(f"IS shuffler must be one of {IS_SHUFFLERS} and chunks one of {IS_CHUNKS}, got {shuffler!r}, {chunks!r}")
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or len(x) < splits:
        raise ValueError(f"IS needs [n, C] logits with n >= splits={splits}, got shape {x.shape}")
    if shuffle:
        if seed is None:
            raise ValueError("a shuffled IS needs a seed")
        rng = np.random.default_rng(seed) if shuffler == "default_rng" else np.random.RandomState(seed)
        x = x[rng.permutation(len(x))]
    log_p = log_softmax(x, axis=-1)
    p = np.exp(log_p)
    n = len(x)
    bounds = ([(i * n // splits, (i + 1) * n // splits) for i in range(splits)] if chunks == "floor"
              else [(c[0], c[-1] + 1) for c in np.array_split(np.arange(n), splits)])
    scores = []
    for start, stop in bounds:
        chunk_p, chunk_log_p = p[start:stop], log_p[start:stop]
        marginal = chunk_p.mean(axis=0)
        scores.append(float(np.exp(kl(chunk_p, np.broadcast_to(marginal, chunk_p.shape), log_p=chunk_log_p).mean())))
    return InceptionScore(float(np.mean(scores)), float(np.std(scores)), splits, seed if shuffle else None, scores)


def score_kl(inputs: MetricInputs) -> dict:
    """Paired KL between each clip's reference and generated class distributions, averaged; the
    `also` option adds the other direction's mean (value_<direction>)."""
    spec = inputs.spec
    ref_logits, gen_logits = clip_logits(inputs.reference, "reference"), clip_logits(inputs.generated, "generated")
    results = {}
    for direction in dict.fromkeys([spec.option("direction", "ref_gen"), spec.option("also")]):
        if direction is None:
            continue
        results[direction] = paired_kl(ref_logits, gen_logits, direction, float(spec.option("eps", 0.0)))
    main = results[spec.option("direction", "ref_gen")]
    if inputs.value_only:
        return {"value": main.mean}
    out = bootstrap(lambda idx: float(main.per_clip[idx].mean()), len(main.clip_ids), inputs.n_boot, inputs.seed).as_dict()
    out.update(direction=main.direction, eps=main.eps, per_clip=dict(zip(main.clip_ids, main.per_clip.tolist())))
    for direction, other in results.items():
        if direction != main.direction:
            out[f"value_{direction}"] = other.mean
    return out


def score_is(inputs: MetricInputs) -> dict:
    """Inception Score of the generated clips' class distributions (split mean; std over splits)."""
    spec, ids = inputs.spec, inputs.ids
    logits = np.stack([clip_logits(inputs.generated, "generated")[i] for i in ids])
    splits, is_seed, shuffle = int(spec.option("splits", 10)), spec.option("seed", 0), bool(spec.option("shuffle", True))
    how = {"shuffler": spec.option("shuffler", "default_rng"), "chunks": spec.option("chunks", "array_split")}
    result = inception_score(logits, splits, is_seed, shuffle, **how)
    if inputs.value_only:
        return {"value": result.mean}
    # a set statistic (the marginal over clips): a bootstrap resample's duplicated clips lower its
    # diversity and pull the draws below the estimate, so the interval is the delete-a-group
    # jackknife's, centred on the estimate (metrics/jackknife.py); IS is at least 1
    largest_group = -(-len(ids) // min(GROUPS, len(ids)))
    if len(ids) - largest_group < splits:  # a leave-out set would hold fewer clips than the splits: no interval, said so
        out = {"ci_low": None, "ci_high": None,
               "ci_method": f"none: the jackknife leaves out up to {largest_group} of {len(ids)} clips, fewer than {splits} splits need"}
    else:
        out = jackknife(lambda idx: inception_score(logits[idx], splits, is_seed, shuffle, **how).mean, len(ids), inputs.seed,
                        floor=1.0)
    out.update(value=result.mean, split_std=result.std, splits=splits, split_seed=result.seed)
    return out


# Registered by call, not by decorator: mutation testing (mutmut) skips decorated functions.
METRICS.add("kl", score_kl)
METRICS.add("is", score_is)
