"""Scalar losses: least squares, logistic regression, softmax cross-entropy, MSE and KL divergence.

Each loss returns a 0-d array; ``NAME_vjp(..., ct)`` returns the cotangent of every float
input, in order (``softmax_cross_entropy_vjp`` returns the logits' cotangent alone, since
labels are integers). Every float input is differentiable, targets included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, binary, integers, large_rows, large_scores, normal, register
from jaxcalc.cases.activations import sigmoid, softplus
from jaxcalc.cases.softmax import log_softmax, softmax

__all__ = [
    "least_squares",
    "least_squares_vjp",
    "least_squares_jvp",
    "logistic_regression",
    "logistic_regression_vjp",
    "logistic_regression_jvp",
    "nll",
    "softmax_cross_entropy",
    "softmax_cross_entropy_vjp",
    "softmax_cross_entropy_jvp",
    "mse",
    "mse_vjp",
    "mse_jvp",
    "kl_divergence",
    "kl_divergence_vjp",
    "kl_divergence_jvp",
]


# ----------------------------------------------------------------------------- least squares


def _residual(X: ArrayLike, w: ArrayLike, b: ArrayLike, y: ArrayLike) -> jax.Array:
    """r = X w + b - y: (n,)."""
    return jnp.asarray(X) @ jnp.asarray(w) + jnp.asarray(b) - jnp.asarray(y)


def _mean_square(r: jax.Array) -> jax.Array:
    """mean(r**2) over every element: ()."""
    return jnp.mean(r * r)


def least_squares(X: ArrayLike, w: ArrayLike, b: ArrayLike, y: ArrayLike) -> jax.Array:
    """mean((X w + b - y)**2); X (n, d), w (d,), b (), y (n,) -> ()."""
    return _mean_square(_residual(X, w, b, y))


def least_squares_vjp(
    X: ArrayLike, w: ArrayLike, b: ArrayLike, y: ArrayLike, ct: ArrayLike
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(dX, dw, db, dy) = (g w^T, X^T g, sum g, -g) with g = 2 ct r / n, r = X w + b - y."""
    r = _residual(X, w, b, y)
    g = 2.0 * jnp.asarray(ct) * r / r.size  # d mean(r**2) / d r
    return jnp.outer(g, jnp.asarray(w)), jnp.asarray(X).T @ g, jnp.sum(g), -g


def least_squares_jvp(
    X: ArrayLike,
    w: ArrayLike,
    b: ArrayLike,
    y: ArrayLike,
    tX: ArrayLike,
    tw: ArrayLike,
    tb: ArrayLike,
    ty: ArrayLike,
) -> jax.Array:
    """d least_squares = (2 / n) <r, tX w + X tw + tb - ty>: ()."""
    r = _residual(X, w, b, y)
    dr = (
        jnp.asarray(tX) @ jnp.asarray(w)
        + jnp.asarray(X) @ jnp.asarray(tw)
        + jnp.asarray(tb)
        - jnp.asarray(ty)
    )
    return 2.0 * jnp.sum(r * dr) / r.size


# ----------------------------------------------------------------------------- logistic regression


def _logit(X: ArrayLike, w: ArrayLike, b: ArrayLike) -> jax.Array:
    """z = X w + b: (n,)."""
    return jnp.asarray(X) @ jnp.asarray(w) + jnp.asarray(b)


def _logistic_mean(z: jax.Array, y: ArrayLike) -> jax.Array:
    """mean(softplus(z) - y z), the mean binary cross-entropy of sigmoid(z) against y: ()."""
    return jnp.mean(softplus(z) - jnp.asarray(y) * z)


def logistic_regression(X: ArrayLike, w: ArrayLike, b: ArrayLike, y: ArrayLike) -> jax.Array:
    """mean(softplus(z) - y z), z = X w + b; X (n, d), w (d,), b (), y (n,) in {0, 1} -> ()."""
    return _logistic_mean(_logit(X, w, b), y)


def logistic_regression_vjp(
    X: ArrayLike, w: ArrayLike, b: ArrayLike, y: ArrayLike, ct: ArrayLike
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(dX, dw, db, dy) = (g w^T, X^T g, sum g, -ct z / n) with g = ct (sigmoid(z) - y) / n."""
    z = _logit(X, w, b)
    ct = jnp.asarray(ct)
    g = ct * (sigmoid(z) - jnp.asarray(y)) / z.size  # softplus'(z) = sigmoid(z)
    return jnp.outer(g, jnp.asarray(w)), jnp.asarray(X).T @ g, jnp.sum(g), -ct * z / z.size


def logistic_regression_jvp(
    X: ArrayLike,
    w: ArrayLike,
    b: ArrayLike,
    y: ArrayLike,
    tX: ArrayLike,
    tw: ArrayLike,
    tb: ArrayLike,
    ty: ArrayLike,
) -> jax.Array:
    """d logistic_regression = mean((sigmoid(z) - y) dz - z ty), dz = tX w + X tw + tb: ()."""
    z = _logit(X, w, b)
    dz = jnp.asarray(tX) @ jnp.asarray(w) + jnp.asarray(X) @ jnp.asarray(tw) + jnp.asarray(tb)
    return jnp.mean((sigmoid(z) - jnp.asarray(y)) * dz - z * jnp.asarray(ty))


# ----------------------------------------------------------------------------- softmax cross-entropy


def _one_hot(labels: jax.Array, n: int, dtype: jnp.dtype) -> jax.Array:
    """onehot[..., j] = 1 where j == labels[...]: (..., n)."""
    return (jnp.arange(n) == labels[..., None]).astype(dtype)


def nll(log_probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Mean negative log-likelihood -mean(log_probs[..., labels]); log_probs (..., C), labels (...) -> ()."""
    lp = jnp.asarray(log_probs)
    picked = jnp.take_along_axis(lp, jnp.asarray(labels)[..., None], axis=-1)
    return -jnp.mean(picked)


def softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """mean over rows of -log softmax(logits)[label]; logits (..., C), labels (...) int in [0, C) -> ()."""
    return nll(log_softmax(logits), labels)


def softmax_cross_entropy_vjp(logits: ArrayLike, labels: ArrayLike, ct: ArrayLike) -> jax.Array:
    """dlogits = ct (softmax(logits) - onehot(labels)) / N, N the number of rows: (..., C)."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    p = softmax(logits)
    return jnp.asarray(ct) * (p - _one_hot(labels, logits.shape[-1], p.dtype)) / labels.size


def softmax_cross_entropy_jvp(logits: ArrayLike, labels: ArrayLike, t: ArrayLike) -> jax.Array:
    """d softmax_cross_entropy = sum((softmax(logits) - onehot(labels)) t) / N: ()."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    p = softmax(logits)
    return jnp.sum((p - _one_hot(labels, logits.shape[-1], p.dtype)) * jnp.asarray(t)) / labels.size


# ----------------------------------------------------------------------------- mse


def mse(pred: ArrayLike, target: ArrayLike) -> jax.Array:
    """mean((pred - target)**2) over every element; pred and target of one shape -> ()."""
    return _mean_square(jnp.asarray(pred) - jnp.asarray(target))


def mse_vjp(pred: ArrayLike, target: ArrayLike, ct: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(dpred, dtarget) = (g, -g) with g = 2 ct (pred - target) / n."""
    d = jnp.asarray(pred) - jnp.asarray(target)
    g = 2.0 * jnp.asarray(ct) * d / d.size
    return g, -g


def mse_jvp(pred: ArrayLike, target: ArrayLike, tpred: ArrayLike, ttarget: ArrayLike) -> jax.Array:
    """d mse = (2 / n) sum((pred - target)(tpred - ttarget)): ()."""
    d = jnp.asarray(pred) - jnp.asarray(target)
    return 2.0 * jnp.sum(d * (jnp.asarray(tpred) - jnp.asarray(ttarget))) / d.size


# ----------------------------------------------------------------------------- kl divergence


def _kl_rows(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """KL(p || q) per row: sum_j p_j (log p_j - log q_j), p = exp(log_p): (...)."""
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def kl_divergence(p_logits: ArrayLike, q_logits: ArrayLike) -> jax.Array:
    """mean over rows of sum_j p_j (log p_j - log q_j), p, q = softmax of each; (..., C) -> ()."""
    return jnp.mean(_kl_rows(log_softmax(p_logits), log_softmax(q_logits)))


def _kl_partials(p_logits: ArrayLike, q_logits: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(d/dp_logits, d/dq_logits) of kl_divergence: (p (g - KL) / R, (q - p) / R), g = log p - log q.

    d KL / d a_k = sum_j (dp_j/da_k) g_j + sum_j p_j (delta_jk - p_k) = p_k (g_k - KL) for the
    p logits a; d KL / d c_k = -sum_j p_j (delta_jk - q_k) = q_k - p_k for the q logits c.
    R is the number of rows the mean runs over.
    """
    log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    kl = _kl_rows(log_p, log_q)[..., None]
    return p * (log_p - log_q - kl) / kl.size, (q - p) / kl.size


def kl_divergence_vjp(p_logits: ArrayLike, q_logits: ArrayLike, ct: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(dp_logits, dq_logits) = ct (p (g - KL), q - p) / R, g = log p - log q, R rows: (..., C) each."""
    dp, dq = _kl_partials(p_logits, q_logits)
    ct = jnp.asarray(ct)
    return ct * dp, ct * dq


def kl_divergence_jvp(p_logits: ArrayLike, q_logits: ArrayLike, tp: ArrayLike, tq: ArrayLike) -> jax.Array:
    """d kl_divergence = sum(p (g - KL) tp + (q - p) tq) / R: ()."""
    dp, dq = _kl_partials(p_logits, q_logits)
    return jnp.sum(dp * jnp.asarray(tp)) + jnp.sum(dq * jnp.asarray(tq))


# ----------------------------------------------------------------------------- cases
# chain(primals) -> (outer, inner), both functions of the first float input's intermediate.

register(
    Case(
        name="least_squares",
        description="mean((X w + b - y)**2)",
        inputs=(Input("X", ("N", "k")), Input("w", ("k",)), Input("b", ()), Input("y", ("N",))),
        # tiles: a mean over more than 2,048 rows (a float16 counter stalls at 2,048)
        sizes={"golden": {"N": 8, "k": 3}, "tiles": {"N": 2049, "k": 2}, "large": {"N": 65536, "k": 64}},
        forward=least_squares,
        vjp=lambda p, ct: least_squares_vjp(*p, ct),
        jvp=lambda p, t: least_squares_jvp(*p, *t),
        chain=lambda p: (_mean_square, lambda X: _residual(X, *p[1:])),
        tags=("loss", "regression", "composite"),
    )
)

register(
    Case(
        name="logistic_regression",
        description="mean(softplus(z) - y z), z = X w + b, y in {0, 1}",
        inputs=(Input("X", ("N", "k")), Input("w", ("k",)), Input("b", ()), Input("y", ("N",), binary())),
        sizes={"golden": {"N": 8, "k": 3}, "tiles": {"N": 2049, "k": 2}, "large": {"N": 65536, "k": 64}},
        # large: scores z = X w + b of both signs out to +-1000, past where exp(z) overflows
        regimes={"large": dict(zip(("X", "w"), large_scores(), strict=True)) | {"b": normal(0.1)}},
        forward=logistic_regression,
        vjp=lambda p, ct: logistic_regression_vjp(*p, ct),
        jvp=lambda p, t: logistic_regression_jvp(*p, *t),
        chain=lambda p: (lambda z: _logistic_mean(z, p[3]), lambda X: _logit(X, p[1], p[2])),
        tags=("loss", "classification", "composite"),
    )
)

register(
    Case(
        name="softmax_cross_entropy",
        description="mean over rows of -log softmax(logits)[label]",
        inputs=(Input("logits", ("N", "C"), normal(2.0)), Input("labels", ("N",), integers("C"), kind="int")),
        # tiles: rows over a class axis longer than 2,048 and no multiple of 32
        sizes={"golden": {"N": 4, "C": 7}, "tiles": {"N": 3, "C": 2051}, "large": {"N": 512, "C": 32768}},
        regimes={"large": {"logits": large_rows()}},
        forward=softmax_cross_entropy,
        vjp=lambda p, ct: (softmax_cross_entropy_vjp(*p, ct),),
        jvp=lambda p, t: softmax_cross_entropy_jvp(*p, t[0]),
        chain=lambda p: (lambda lp: nll(lp, p[1]), log_softmax),
        tags=("loss", "classification", "composite"),
    )
)

register(
    Case(
        name="mse",
        description="mean((pred - target)**2)",
        inputs=(Input("pred", ("N", "k")), Input("target", ("N", "k"))),
        sizes={"golden": {"N": 4, "k": 3}, "tiles": {"N": 65, "k": 33}, "large": {"N": 4096, "k": 1024}},
        forward=mse,
        vjp=lambda p, ct: mse_vjp(*p, ct),
        jvp=lambda p, t: mse_jvp(*p, *t),
        tags=("loss", "regression"),
    )
)

register(
    Case(
        name="kl_divergence",
        description="mean over rows of sum_j p_j (log p_j - log q_j), p, q = softmax of each logits",
        inputs=(Input("p_logits", ("r", "n"), normal(1.5)), Input("q_logits", ("r", "n"), normal(1.5))),
        sizes={"golden": {"r": 3, "n": 5}, "tiles": {"r": 2, "n": 257}, "large": {"r": 512, "n": 4096}},
        regimes={"large": {"p_logits": large_rows(), "q_logits": large_rows(3.0)}},
        forward=kl_divergence,
        vjp=lambda p, ct: kl_divergence_vjp(*p, ct),
        jvp=lambda p, t: kl_divergence_jvp(*p, *t),
        chain=lambda p: (lambda lp: jnp.mean(_kl_rows(lp, log_softmax(p[1]))), log_softmax),
        tags=("loss", "divergence", "composite"),
    )
)
