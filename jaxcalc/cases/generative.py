"""Losses of generative models: a VAE's negative ELBO, DDPM's noise-prediction loss and the GAN pair.

Every network inside is small and written out, and every backward pass is written by hand from the
existing layer pullbacks (``linear_vjp``, the activations' derivatives); the noise the models draw
is an input, so each loss is a deterministic map.

vae_elbo (Kingma and Welling's reparameterization, a Gaussian decoder of unit variance):

  h = tanh(x We + be),  mu = h Wmu + bmu,  logvar = h Wlv + blv,  z = mu + exp(logvar / 2) eps
  xhat = tanh(z Wd1 + bd1) Wd2 + bd2
  loss = (1/N) sum_n [ 1/2 ||x_n - xhat_n||^2  -  1/2 sum_j (1 + logvar - mu^2 - exp(logvar))_nj ]

ddpm_loss (Ho et al., epsilon prediction, linear beta schedule):

  abar_t = prod_{s <= t} (1 - beta_s),  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise
  eps_hat = silu(x_t W1 + (t / T) w_t + b1) W2 + b2,   loss = mean((eps_hat - noise)^2)

gan_losses (Goodfellow et al.'s non-saturating pair; softplus(-l) = -log sigmoid(l)):

  x_fake = tanh(z Wg1 + bg1) Wg2 + bg2,   D(x) = tanh(x Wd1 + bd1) wd2 + bd2 (a logit per row)
  L_D = mean softplus(-D(x_real)) + mean softplus(D(x_fake)),  L_G = mean softplus(-D(x_fake))
  output stack([L_D, L_G]) (2,), a function of every input (no stop-gradient: the map itself)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, integers, normal, register
from jaxcalc.cases.activations import sigmoid, silu, silu_grad, softplus
from jaxcalc.cases.layers import linear, linear_vjp

__all__ = [
    "VAE_INPUTS",
    "vae_elbo",
    "vae_elbo_vjp",
    "vae_elbo_stages",
    "DDPM_SETTINGS",
    "ddpm_alpha_bar",
    "ddpm_loss",
    "ddpm_loss_vjp",
    "gan_losses",
    "gan_losses_vjp",
]


def _h64(a: jax.Array) -> np.ndarray:
    return np.asarray(a, np.float64)


# ----------------------------------------------------------------------------- vae

VAE_INPUTS = ("x", "eps", "We", "be", "Wmu", "bmu", "Wlv", "blv", "Wd1", "bd1", "Wd2", "bd2")


def _vae_forward(x, eps, We, be, Wmu, bmu, Wlv, blv, Wd1, bd1, Wd2, bd2) -> dict[str, jax.Array]:
    """Every intermediate of the VAE's forward pass, by name."""
    pe = linear(x, We, be)
    h = jnp.tanh(pe)
    mu, lv = linear(h, Wmu, bmu), linear(h, Wlv, blv)
    std = jnp.exp(0.5 * lv)
    z = mu + std * eps
    pd = linear(z, Wd1, bd1)
    g = jnp.tanh(pd)
    xhat = linear(g, Wd2, bd2)
    return {"pe": pe, "h": h, "mu": mu, "lv": lv, "std": std, "z": z, "pd": pd, "g": g, "xhat": xhat}


def _kl(mu: jax.Array, lv: jax.Array) -> jax.Array:
    """KL(N(mu, exp(lv)) || N(0, 1)) summed over every element: -1/2 sum(1 + lv - mu^2 - exp(lv))."""
    return -0.5 * jnp.sum(1.0 + lv - mu * mu - jnp.exp(lv))


def _kl_grads(mu: jax.Array, lv: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(dKL/dmu, dKL/dlv) = (mu, (exp(lv) - 1) / 2), elementwise."""
    return mu, 0.5 * (jnp.exp(lv) - 1.0)


def vae_elbo(x, eps, We, be, Wmu, bmu, Wlv, blv, Wd1, bd1, Wd2, bd2) -> jax.Array:
    """The negative ELBO per sample (see the module docstring): x (N, D), eps (N, Z) -> ().

    We (D, H), Wmu and Wlv (H, Z), Wd1 (Z, H), Wd2 (H, D), biases of the matching widths.
    """
    x = jnp.asarray(x)
    v = _vae_forward(x, eps, We, be, Wmu, bmu, Wlv, blv, Wd1, bd1, Wd2, bd2)
    r = x - v["xhat"]
    return (0.5 * jnp.sum(r * r) + _kl(v["mu"], v["lv"])) / x.shape[0]


def _vae_backward(primals: tuple, ct: ArrayLike) -> tuple[dict, dict]:
    """(gradients by input name, the cotangent of every intermediate) of :func:`vae_elbo`."""
    x, eps, We, be, Wmu, bmu, Wlv, blv, Wd1, bd1, Wd2, bd2 = (jnp.asarray(p) for p in primals)
    v = _vae_forward(x, eps, We, be, Wmu, bmu, Wlv, blv, Wd1, bd1, Wd2, bd2)
    ct = jnp.asarray(ct)
    n = x.shape[0]
    dxhat = ct * (v["xhat"] - x) / n  # d/dxhat of ||x - xhat||^2 / (2N)
    dg, dWd2, dbd2 = linear_vjp(v["g"], Wd2, bd2, dxhat)
    dpd = dg * (1.0 - v["g"] ** 2)  # tanh' = 1 - tanh^2
    dz, dWd1, dbd1 = linear_vjp(v["z"], Wd1, bd1, dpd)
    kmu, klv = _kl_grads(v["mu"], v["lv"])
    dmu = dz + ct * kmu / n  # z = mu + std eps, and the KL term
    dlv = dz * eps * 0.5 * v["std"] + ct * klv / n  # d std / d lv = std / 2
    deps = dz * v["std"]
    dh_mu, dWmu, dbmu = linear_vjp(v["h"], Wmu, bmu, dmu)
    dh_lv, dWlv, dblv = linear_vjp(v["h"], Wlv, blv, dlv)
    dh = dh_mu + dh_lv
    dpe = dh * (1.0 - v["h"] ** 2)
    dx_enc, dWe, dbe = linear_vjp(x, We, be, dpe)
    grads = dict(x=dx_enc - dxhat, eps=deps, We=dWe, be=dbe, Wmu=dWmu, bmu=dbmu, Wlv=dWlv, blv=dblv,
                 Wd1=dWd1, bd1=dbd1, Wd2=dWd2, bd2=dbd2)  # fmt: skip
    cts = {"pe": dpe, "h": dh, "mu": dmu, "lv": dlv, "pd": dpd, "g": dg, "xhat": dxhat}
    return grads, {"v": v, **cts}


def vae_elbo_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """Handwritten backward pass of :func:`vae_elbo`: one cotangent per input, in order."""
    grads = _vae_backward(primals, ct)[0]
    return tuple(grads[n] for n in VAE_INPUTS)


def vae_elbo_stages(inputs: dict, ct) -> list[tuple[str, str, dict, np.ndarray]]:
    """The VAE's sub-ops as instances of existing cases, at its real intermediates and cotangents."""
    p = tuple(inputs[n] for n in VAE_INPUTS)
    with jax.enable_x64(True):
        _, c = _vae_backward(tuple(jnp.asarray(a, jnp.float64) for a in p), jnp.asarray(ct, jnp.float64))
        v = c["v"]
        d = np.asarray(inputs["x"]).shape[-1]
        lin = lambda x, W, b: {"x": _h64(x), "W": _h64(inputs[W]), "b": _h64(inputs[b])}  # noqa: E731
        return [
            ("enc", "linear", lin(inputs["x"], "We", "be"), _h64(c["pe"])),
            ("enc_act", "tanh", {"x": _h64(v["pe"])}, _h64(c["h"])),
            ("mu", "linear", lin(v["h"], "Wmu", "bmu"), _h64(c["mu"])),
            ("logvar", "linear", lin(v["h"], "Wlv", "blv"), _h64(c["lv"])),
            ("dec1", "linear", lin(v["z"], "Wd1", "bd1"), _h64(c["pd"])),
            ("dec_act", "tanh", {"x": _h64(v["pd"])}, _h64(c["g"])),
            ("dec2", "linear", lin(v["g"], "Wd2", "bd2"), _h64(c["xhat"])),
            # 1/2 sum (x - xhat)^2 / N = (D / 2) mse(xhat, x)
            ("recon", "mse", {"pred": _h64(v["xhat"]), "target": _h64(inputs["x"])}, _h64(ct) * 0.5 * d),
        ]


register(
    Case(
        name="vae_elbo",
        description=(
            "negative ELBO of a VAE, reparameterized z = mu + exp(logvar/2) eps (eps an input), tanh "
            "encoder and decoder, Gaussian likelihood: mean_n [||x - xhat||^2 / 2 + KL(q(z|x) || N(0, I))]"
        ),
        inputs=(
            Input("x", ("N", "D"), normal(1.0)),
            Input("eps", ("N", "Z"), normal(1.0)),
            Input("We", ("D", "H"), fan_in()),
            Input("be", ("H",), normal(0.1)),
            Input("Wmu", ("H", "Z"), fan_in()),
            Input("bmu", ("Z",), normal(0.1)),
            Input("Wlv", ("H", "Z"), fan_in(0.5)),
            Input("blv", ("Z",), normal(0.1)),
            Input("Wd1", ("Z", "H"), fan_in()),
            Input("bd1", ("H",), normal(0.1)),
            Input("Wd2", ("H", "D"), fan_in()),
            Input("bd2", ("D",), normal(0.1)),
        ),
        sizes={
            "golden": {"N": 4, "D": 6, "H": 5, "Z": 3},
            "tiles": {"N": 17, "D": 35, "H": 33, "Z": 17},
            "large": {"N": 256, "D": 784, "H": 512, "Z": 64},
        },
        forward=vae_elbo,
        vjp=vae_elbo_vjp,
        stages=vae_elbo_stages,
        tags=("composite", "generative", "loss"),
    )
)


# ----------------------------------------------------------------------------- ddpm

DDPM_SETTINGS = {"T_steps": 1000, "beta_start": 1e-4, "beta_end": 0.02}


def ddpm_alpha_bar(t: ArrayLike, dtype: jnp.dtype) -> jax.Array:
    """abar_t = prod_{s <= t} (1 - beta_s), beta linear from beta_start to beta_end over T_steps."""
    s = DDPM_SETTINGS
    betas = jnp.linspace(s["beta_start"], s["beta_end"], s["T_steps"], dtype=dtype)
    return jnp.cumprod(1.0 - betas)[jnp.asarray(t)]


def _ddpm_forward(x0, noise, t, W1, wt, b1, W2, b2) -> dict[str, jax.Array]:
    x0, noise = jnp.asarray(x0), jnp.asarray(noise)
    ab = ddpm_alpha_bar(t, x0.dtype)[:, None]
    tau = (jnp.asarray(t).astype(x0.dtype) / DDPM_SETTINGS["T_steps"])[:, None]
    xt = jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise
    pre = linear(xt, W1, b1) + tau * jnp.asarray(wt)
    h = silu(pre)
    return {"ab": ab, "tau": tau, "xt": xt, "pre": pre, "h": h, "eps_hat": linear(h, W2, b2)}


def ddpm_loss(x0, noise, t, W1, wt, b1, W2, b2) -> jax.Array:
    """mean((eps_hat(x_t, t) - noise)^2), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise: ().

    x0 and noise (N, D), t (N,) int in [0, T_steps); the denoiser W1 (D, H), wt and b1 (H,),
    W2 (H, D), b2 (D,).
    """
    r = _ddpm_forward(x0, noise, t, W1, wt, b1, W2, b2)["eps_hat"] - jnp.asarray(noise)
    return jnp.mean(r * r)


def _noise_coefficients(ab: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(d x_t / d x0, d x_t / d noise) = (sqrt(abar_t), sqrt(1 - abar_t))."""
    return jnp.sqrt(ab), jnp.sqrt(1.0 - ab)


def ddpm_loss_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """(dx0, dnoise, dW1, dwt, db1, dW2, db2) of :func:`ddpm_loss`; noise reaches the loss twice."""
    x0, noise, t, W1, wt, b1, W2, b2 = primals
    v = _ddpm_forward(x0, noise, t, W1, wt, b1, W2, b2)
    r = v["eps_hat"] - jnp.asarray(noise)
    de = 2.0 * jnp.asarray(ct) * r / r.size
    dh, dW2, db2 = linear_vjp(v["h"], W2, b2, de)
    dpre = dh * silu_grad(v["pre"])
    dxt, dW1, db1 = linear_vjp(v["xt"], W1, b1, dpre)
    dwt = jnp.sum(v["tau"] * dpre, axis=0)
    cx, cn = _noise_coefficients(v["ab"])
    return dxt * cx, dxt * cn - de, dW1, dwt, db1, dW2, db2


register(
    Case(
        name="ddpm_loss",
        description=(
            "DDPM epsilon-prediction loss mean((eps_hat(x_t, t) - noise)^2), x_t = sqrt(abar_t) x0 + "
            "sqrt(1 - abar_t) noise, linear betas 1e-4..0.02 over 1000 steps, a silu MLP denoiser fed t/1000"
        ),
        inputs=(
            Input("x0", ("N", "D"), normal(1.0)),
            Input("noise", ("N", "D"), normal(1.0)),
            Input("t", ("N",), integers(DDPM_SETTINGS["T_steps"]), kind="int"),
            Input("W1", ("D", "H"), fan_in()),
            Input("wt", ("H",), normal(1.0)),
            Input("b1", ("H",), normal(0.1)),
            Input("W2", ("H", "D"), fan_in()),
            Input("b2", ("D",), normal(0.1)),
        ),
        settings=DDPM_SETTINGS,
        sizes={
            "golden": {"N": 5, "D": 4, "H": 6},
            "tiles": {"N": 33, "D": 33, "H": 35},
            "large": {"N": 256, "D": 3072, "H": 1024},
        },
        forward=ddpm_loss,
        vjp=ddpm_loss_vjp,
        tags=("composite", "generative", "loss"),
    )
)


# ----------------------------------------------------------------------------- gan


def _mlp_tanh(x, W1, b1, W2, b2) -> tuple[jax.Array, jax.Array]:
    """(h, h W2 + b2) with h = tanh(x W1 + b1)."""
    h = jnp.tanh(linear(x, W1, b1))
    return h, linear(h, W2, b2)


def _mlp_tanh_vjp(x, h, W1, b1, W2, b2, ct) -> tuple[jax.Array, ...]:
    """(dx, dW1, db1, dW2, db2) of :func:`_mlp_tanh`'s output, given its hidden h."""
    dh, dW2, db2 = linear_vjp(h, W2, b2, ct)
    dx, dW1, db1 = linear_vjp(x, W1, b1, dh * (1.0 - h * h))
    return dx, dW1, db1, dW2, db2


def gan_losses(z, x_real, Wg1, bg1, Wg2, bg2, Wd1, bd1, wd2, bd2) -> jax.Array:
    """stack([L_D, L_G]) of the non-saturating GAN (module docstring): (2,).

    z (N, Z), x_real (N, D); generator Wg1 (Z, H), Wg2 (H, D); discriminator Wd1 (D, H), wd2 (H, 1),
    bd2 (1,).
    """
    _, xf = _mlp_tanh(z, Wg1, bg1, Wg2, bg2)
    lr = _mlp_tanh(x_real, Wd1, bd1, wd2, bd2)[1][:, 0]
    lf = _mlp_tanh(xf, Wd1, bd1, wd2, bd2)[1][:, 0]
    l_d = jnp.mean(softplus(-lr)) + jnp.mean(softplus(lf))
    return jnp.stack([l_d, jnp.mean(softplus(-lf))])


def _generator_logit_grad(lf: jax.Array) -> jax.Array:
    """d softplus(-l) / dl = sigmoid(l) - 1: the non-saturating generator loss -log D(G(z))."""
    return sigmoid(lf) - 1.0


def gan_losses_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """Pull back ct = (c_D, c_G): the discriminator runs twice (real, fake), its gradients add up."""
    z, xr, Wg1, bg1, Wg2, bg2, Wd1, bd1, wd2, bd2 = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    hg, xf = _mlp_tanh(z, Wg1, bg1, Wg2, bg2)
    hr, lr = _mlp_tanh(xr, Wd1, bd1, wd2, bd2)
    hf, lf = _mlp_tanh(xf, Wd1, bd1, wd2, bd2)
    lr, lf, n = lr[:, 0], lf[:, 0], lr.shape[0]
    # d softplus(-l)/dl = -sigmoid(-l) = sigmoid(l) - 1;  d softplus(l)/dl = sigmoid(l)
    dlr = ct[0] * (sigmoid(lr) - 1.0) / n
    dlf = ct[0] * sigmoid(lf) / n + ct[1] * _generator_logit_grad(lf) / n
    dxr, dWd1_r, dbd1_r, dwd2_r, dbd2_r = _mlp_tanh_vjp(xr, hr, Wd1, bd1, wd2, bd2, dlr[:, None])
    dxf, dWd1_f, dbd1_f, dwd2_f, dbd2_f = _mlp_tanh_vjp(xf, hf, Wd1, bd1, wd2, bd2, dlf[:, None])
    dz, dWg1, dbg1, dWg2, dbg2 = _mlp_tanh_vjp(z, hg, Wg1, bg1, Wg2, bg2, dxf)
    return (dz, dxr, dWg1, dbg1, dWg2, dbg2, dWd1_r + dWd1_f, dbd1_r + dbd1_f, dwd2_r + dwd2_f,
            dbd2_r + dbd2_f)  # fmt: skip


register(
    Case(
        name="gan_losses",
        description=(
            "non-saturating GAN pair stack([mean softplus(-D(x_real)) + mean softplus(D(G(z))), "
            "mean softplus(-D(G(z)))]), G and D one-hidden-layer tanh MLPs, D a logit per row -> (2,)"
        ),
        inputs=(
            Input("z", ("N", "Z"), normal(1.0)),
            Input("x_real", ("N", "D"), normal(1.0)),
            Input("Wg1", ("Z", "H"), fan_in()),
            Input("bg1", ("H",), normal(0.1)),
            Input("Wg2", ("H", "D"), fan_in()),
            Input("bg2", ("D",), normal(0.1)),
            Input("Wd1", ("D", "H"), fan_in()),
            Input("bd1", ("H",), normal(0.1)),
            Input("wd2", ("H", 1), fan_in()),
            Input("bd2", (1,), normal(0.1)),
        ),
        sizes={
            "golden": {"N": 6, "Z": 3, "D": 4, "H": 5},
            "tiles": {"N": 33, "Z": 17, "D": 33, "H": 35},
            "large": {"N": 256, "Z": 128, "D": 784, "H": 512},
        },
        forward=gan_losses,
        vjp=gan_losses_vjp,
        tags=("composite", "generative", "loss"),
    )
)
