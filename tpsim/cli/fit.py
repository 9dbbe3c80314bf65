"""Least-squares alpha and beta from measured collective times, with tpsim's closed forms as the model.

Every closed form in tpsim.collectives.costs is linear in alpha and in beta = 1 / bandwidth:

    t(S) = a(S) alpha + b(S) beta,   a = cost(p, S, alpha=1, bandwidth=inf),  b = cost(p, S, 0, 1)

e.g. a ring all-reduce has a = 2(p-1) and b = 2(p-1)/p S.  The fit minimises the squared
*relative* error over the sizes, so 1 KiB and 64 MiB weigh alike, with alpha, beta >= 0.
"""

from __future__ import annotations

import math

import numpy as np

from tpsim.collectives.algorithms import check_algorithm
from tpsim.collectives.costs import COSTS
from tpsim.errors import FitError


def coefficients(collective: str, algorithm: str, p: int, sizes) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per size: the closed form's multipliers of alpha and of beta."""
    f = COSTS[collective, check_algorithm(collective, algorithm)]
    a = np.array([f(p, s, 1.0, math.inf) for s in sizes])
    b = np.array([f(p, s, 0.0, 1.0) for s in sizes])
    return a, b


def fit(collective: str, algorithm: str, p: int, sizes, times) -> dict:
    """alpha (s), beta (s/B), bandwidth (B/s), and per size: measured, predicted, relative error."""
    sizes, t = list(sizes), np.asarray(times, dtype=np.float64)
    if len(sizes) != len(t) or len(sizes) < 2:
        raise FitError(f"need at least 2 sizes with one time each; got {len(sizes)} sizes, {len(t)} times")
    if not (np.isfinite(t).all() and (t > 0).all()):
        raise FitError(f"measured times must be finite and > 0; got {t.tolist()}")
    a, b = coefficients(collective, algorithm, p, sizes)
    A = np.stack([a / t, b / t], axis=1)  # rows scaled by 1/t: residuals are relative errors
    ones = np.ones(len(t))
    candidates = []
    x, *_ = np.linalg.lstsq(A, ones, rcond=None)
    if (x >= 0).all():
        candidates.append(x)
    for keep in (0, 1):  # the boundary: one of alpha, beta at 0
        col = A[:, keep]
        v = max(0.0, float(col @ ones / (col @ col))) if col @ col > 0 else 0.0
        candidates.append(np.array([v, 0.0]) if keep == 0 else np.array([0.0, v]))
    best = min(candidates, key=lambda x: float(np.sum((A @ x - ones) ** 2)))
    alpha, beta = (float(v) for v in best)
    pred = a * alpha + b * beta
    rel = (pred - t) / t
    return {
        "collective": collective,
        "algorithm": algorithm,
        "world_size": p,
        "alpha": alpha,
        "beta": beta,
        "bandwidth": 1 / beta if beta > 0 else None,  # None: no bandwidth term found
        "points": [
            {"size": s, "measured": float(m), "predicted": float(q), "error": float(e)}
            for s, m, q, e in zip(sizes, t, pred, rel, strict=True)
        ],
        "max_abs_error": float(np.abs(rel).max()),
        "median_abs_error": float(np.median(np.abs(rel))),
    }
