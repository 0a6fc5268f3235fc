#!/usr/bin/env node
// Part of the jaxcalc catalogue written by hand in plain JavaScript (Node 20, no packages):
// forward and backward for each case below, spoken over jaxcalc's JSON Lines protocol.
//
//   jaxcalc export golden
//   jaxcalc verify golden --cmd "node examples/node/impl.js"
//
// One request per stdin line: {"id": 1, "case": "softmax", "inputs": {...}, "cotangent": {...}},
// arrays as {"dtype": "float64", "shape": [3, 7], "data": [flat, row-major]}. One reply per line:
// {"id": 1, "value": <array>, "vjp": {name: <array>}} or {"id": 1, "error": "unsupported"}.
// All arithmetic is in JavaScript numbers (IEEE float64). The program ends when stdin closes.
"use strict";

const readline = require("node:readline");

// ---------------------------------------------------------------------------- arrays
// A tensor is {shape: number[], data: Float64Array}, data flat and row-major.

const size = (shape) => shape.reduce((a, b) => a * b, 1);
const T = (shape, data) => ({ shape, data: data instanceof Float64Array ? data : Float64Array.from(data) });
const zeros = (shape) => T(shape, new Float64Array(size(shape)));
const map = (a, f) => T(a.shape, a.data.map(f));
const zip = (a, b, f) => T(a.shape, a.data.map((x, i) => f(x, b.data[i], i)));
const sum = (a) => a.data.reduce((s, x) => s + x, 0);
const scalar = (x) => T([], [x]);

// (n, k) @ (k, m) -> (n, m); a 1-d right operand is a column: (n, k) @ (k) -> (n).
function matmul(a, b) {
  const [n, k] = a.shape;
  const m = b.shape.length === 1 ? 1 : b.shape[1];
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++)
    for (let p = 0; p < k; p++) {
      const aip = a.data[i * k + p];
      for (let j = 0; j < m; j++) out[i * m + j] += aip * b.data[p * m + j];
    }
  return T(b.shape.length === 1 ? [n] : [n, m], out);
}

function transpose(a) {
  const [n, m] = a.shape.length === 1 ? [a.shape[0], 1] : a.shape;
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) out[j * n + i] = a.data[i * m + j];
  return T(a.shape.length === 1 ? [1, n] : [m, n], out);
}

const asMatrix = (a) => (a.shape.length === 1 ? T([a.shape[0], 1], a.data) : a);
const outer = (u, v) => matmul(asMatrix(u), T([1, v.data.length], v.data));
const rowCount = (a) => size(a.shape.slice(0, -1));
const addRow = (a, b) => zip(a, a, (x, _, i) => x + b.data[i % b.data.length]); // a + b over the last axis

function sumRows(a) {
  const m = a.shape[a.shape.length - 1];
  const out = new Float64Array(m);
  a.data.forEach((x, i) => (out[i % m] += x));
  return T([m], out);
}

// Apply f(rowArray, rowIndex) -> number[] to each row of the last axis.
function rowwise(a, f, outWidth) {
  const m = a.shape[a.shape.length - 1];
  const n = rowCount(a);
  const w = outWidth ?? m;
  const out = new Float64Array(n * w);
  for (let r = 0; r < n; r++) out.set(f(a.data.subarray(r * m, (r + 1) * m), r), r * w);
  return T(w === m ? a.shape : [...a.shape.slice(0, -1), ...(w === 1 ? [] : [w])], out);
}

// ---------------------------------------------------------------------------- building blocks

const sigmoidF = (z) => 0.5 * (1 + Math.tanh(0.5 * z));
const softplusF = (z) => Math.max(z, 0) + Math.log1p(Math.exp(-Math.abs(z)));
const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_K = 0.044715;

function softmaxRow(row) {
  const m = Math.max(...row);
  const e = row.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}
const logsumexpRow = (row) => {
  const m = Math.max(...row);
  return m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
};
const softmax = (x) => rowwise(x, softmaxRow);
const logSoftmax = (x) =>
  rowwise(x, (row) => {
    const lse = logsumexpRow(row);
    return row.map((v) => v - lse);
  });

// (diag(y) - y y^T) dy = y (dy - <dy, y>), row by row.
function softmaxBack(y, dy) {
  const m = y.shape[y.shape.length - 1];
  return rowwise(y, (row, r) => {
    const d = dy.data.subarray(r * m, (r + 1) * m);
    const dot = row.reduce((s, v, j) => s + v * d[j], 0);
    return row.map((v, j) => v * (d[j] - dot));
  });
}

// Elementwise pairs [f(x), f'(x)].
const ACTIVATIONS = {
  sigmoid: (x) => [sigmoidF(x), sigmoidF(x) * (1 - sigmoidF(x))],
  tanh: (x) => [Math.tanh(x), 1 - Math.tanh(x) ** 2],
  relu: (x) => (x > 0 ? [x, 1] : [0, 0]),
  leaky_relu: (x) => (x > 0 ? [x, 1] : [0.01 * x, 0.01]),
  softplus: (x) => [softplusF(x), sigmoidF(x)],
  silu: (x) => [x * sigmoidF(x), sigmoidF(x) * (1 + x * (1 - sigmoidF(x)))],
  gelu_tanh: (x) => {
    const th = Math.tanh(GELU_C * (x + GELU_K * x ** 3));
    return [0.5 * x * (1 + th), 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * GELU_C * (1 + 3 * GELU_K * x * x)];
  },
  gelu_erf: (x) => {
    const cdf = 0.5 * (1 + erf(x / Math.SQRT2));
    return [x * cdf, cdf + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI)]; // Phi(x) + x phi(x)
  },
};

// xW + b; back(dy) -> [dx = dy W^T, dW = x^T dy, db = sum_rows dy].
function linearLayer(x, W, b) {
  const y = addRow(matmul(x, W), b);
  return [y, (dy) => [matmul(dy, transpose(W)), matmul(transpose(x), dy), sumRows(dy)]];
}

// gamma (x - mu) / sqrt(var + 1e-5) + beta over the last axis, var biased;
// back(dy) -> [dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dgamma, dbeta], dxhat = gamma dy.
function layerNorm(x, gamma, beta) {
  const m = gamma.data.length;
  const rstd = rowwise(
    x,
    (row) => {
      const mu = row.reduce((a, v) => a + v, 0) / m;
      return [1 / Math.sqrt(row.reduce((a, v) => a + (v - mu) ** 2, 0) / m + 1e-5)];
    },
    1,
  );
  const xhat = rowwise(x, (row, r) => {
    const mu = row.reduce((a, v) => a + v, 0) / m;
    return row.map((v) => (v - mu) * rstd.data[r]);
  });
  const y = zip(xhat, xhat, (h, _, i) => gamma.data[i % m] * h + beta.data[i % m]);
  const back = (dy) => {
    const dx = rowwise(dy, (row, r) => {
      const d = row.map((v, j) => v * gamma.data[j]);
      const h = xhat.data.subarray(r * m, (r + 1) * m);
      const md = d.reduce((a, v) => a + v, 0) / m;
      const mdh = d.reduce((a, v, j) => a + v * h[j], 0) / m;
      return d.map((v, j) => rstd.data[r] * (v - md - h[j] * mdh));
    });
    return [dx, sumRows(zip(dy, xhat, (a, b) => a * b)), sumRows(dy)];
  };
  return [y, back];
}

// softmax(q k^T / sqrt(d) [j <= i only, when causal]) v; back(do) -> [dq, dk, dv].
function attend(q, k, v, causal) {
  const scale = 1 / Math.sqrt(q.shape[1]);
  const n = k.shape[0];
  const s = zip(matmul(q, transpose(k)), q, (x, _, i) => (causal && i % n > Math.floor(i / n) ? -Infinity : x * scale));
  const p = softmax(s);
  const back = (dout) => {
    const ds = map(softmaxBack(p, matmul(dout, transpose(v))), (x) => x * scale); // masked: p = 0, ds = 0
    return [matmul(ds, k), matmul(transpose(ds), q), matmul(transpose(p), dout)];
  };
  return [matmul(p, v), back];
}

// Columns [from, to) of a matrix, and their adjoint (write into a zero matrix of n columns).
const columns = (a, from, to) => rowwise(a, (row) => row.slice(from, to), to - from);
function placeColumns(a, from, n) {
  const w = a.shape[1];
  return rowwise(zeros([a.shape[0], n]), (row, r) => {
    const out = Float64Array.from(row);
    out.set(a.data.subarray(r * w, (r + 1) * w), from);
    return out;
  });
}

// Causal self-attention with 2 heads of size D/2, concatenated, times Wo; back(dy) -> [dx, dWq, dWk, dWv, dWo].
function selfAttention(x, Wq, Wk, Wv, Wo, heads = 2) {
  const [q, k, v] = [matmul(x, Wq), matmul(x, Wk), matmul(x, Wv)];
  const d = q.shape[1];
  const hs = d / heads;
  const parts = [];
  let o = zeros([x.shape[0], d]);
  for (let h = 0; h < heads; h++) {
    const [oh, back] = attend(columns(q, h * hs, (h + 1) * hs), columns(k, h * hs, (h + 1) * hs), columns(v, h * hs, (h + 1) * hs), true);
    parts.push(back);
    o = zip(o, placeColumns(oh, h * hs, d), (a, b) => a + b);
  }
  const back = (dy) => {
    const dout = matmul(dy, transpose(Wo));
    let [dq, dk, dv] = [zeros(q.shape), zeros(k.shape), zeros(v.shape)];
    const add = (a, b) => zip(a, b, (u, w) => u + w);
    parts.forEach((headBack, h) => {
      const [gq, gk, gv] = headBack(columns(dout, h * hs, (h + 1) * hs));
      [dq, dk, dv] = [add(dq, placeColumns(gq, h * hs, d)), add(dk, placeColumns(gk, h * hs, d)), add(dv, placeColumns(gv, h * hs, d))];
    });
    // x feeds all three projections
    const dx = add(add(matmul(dq, transpose(Wq)), matmul(dk, transpose(Wk))), matmul(dv, transpose(Wv)));
    const xt = transpose(x);
    return [dx, matmul(xt, dq), matmul(xt, dk), matmul(xt, dv), matmul(transpose(o), dy)];
  };
  return [matmul(o, Wo), back];
}

// erf by its everywhere-positive series erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1 3 5 ... (2n+1)).
function erf(x) {
  if (Math.abs(x) > 6) return Math.sign(x);
  let term = x;
  let total = x;
  for (let n = 1; Math.abs(term) > 1e-17 * Math.abs(total); n++) {
    term *= (2 * x * x) / (2 * n + 1);
    total += term;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * total;
}

// mean over rows of -log softmax(logits)[label]; back(c) = c (softmax - onehot) / N.
function crossEntropy(logits, labels) {
  const n = logits.shape[0];
  const c = logits.shape[1];
  const lp = logSoftmax(logits);
  const loss = -labels.data.reduce((s, l, r) => s + lp.data[r * c + l], 0) / n;
  const back = (ct) => {
    const d = softmax(logits);
    labels.data.forEach((l, r) => (d.data[r * c + l] -= 1));
    return map(d, (v) => (ct * v) / n);
  };
  return [scalar(loss), back];
}

// ---------------------------------------------------------------------------- cases
// Each takes (inputs, cotangent) and returns [value, {name: vjp}].

const CASES = {
  square: ({ x }, c) => [map(x, (v) => v * v), { x: zip(x, c, (v, g) => g * 2 * v) }],
  poly_xy: ({ x, y }, c) => [
    zip(x, y, (a, b) => 3 * a * a + 2 * b),
    { x: zip(x, c, (v, g) => g * 6 * v), y: map(c, (g) => g * 2) }, // df/dx = 6x, df/dy = 2
  ],
  chain_affine_square: ({ x }, c) => [
    map(x, (v) => (2 * v + 3) ** 2),
    { x: zip(x, c, (v, g) => g * 2 * (2 * v + 3) * 2) }, // f'(g(x)) g'(x) = 2(2x + 3) * 2
  ],
  descent_square: ({ x0 }, c) => {
    const xs = [];
    let x = x0.data[0];
    for (let k = 0; k < c.data.length; k++) xs.push((x = x - 0.1 * 2 * x));
    let acc = 0;
    for (let k = c.data.length - 1; k >= 0; k--) acc = (acc + c.data[k]) * (1 - 2 * 0.1); // dx_{k-1} = 0.8 (dx_k + c_k)
    return [T([xs.length], xs), { x0: scalar(acc) }];
  },
  exp_sin: ({ x }, c) => [map(x, (v) => Math.exp(Math.sin(v))), { x: zip(x, c, (v, g) => g * Math.exp(Math.sin(v)) * Math.cos(v)) }],
  rosenbrock: ({ x }, c) => {
    const v = x.data;
    const g = new Float64Array(v.length);
    let f = 0;
    for (let i = 0; i + 1 < v.length; i++) {
      const d = v[i + 1] - v[i] * v[i];
      f += 100 * d * d + (1 - v[i]) ** 2;
      g[i] += -400 * v[i] * d - 2 * (1 - v[i]); // d/dx_i
      g[i + 1] += 200 * d; // d/dx_{i+1}
    }
    return [scalar(f), { x: T(x.shape, g.map((u) => u * c.data[0])) }];
  },
  quadratic_form: ({ A, b, x }, c) => {
    const Ax = matmul(A, x);
    const ATx = matmul(transpose(A), x);
    const f = 0.5 * sum(zip(x, Ax, (u, v) => u * v)) + sum(zip(b, x, (u, v) => u * v));
    const g = c.data[0];
    const dx = zip(Ax, ATx, (u, v, i) => g * (0.5 * (u + v) + b.data[i])); // (A + A^T) x / 2 + b
    return [scalar(f), { A: map(outer(x, x), (v) => 0.5 * g * v), b: map(x, (v) => g * v), x: dx }];
  },
  least_squares: ({ X, w, b, y }, c) => {
    const r = zip(matmul(X, w), y, (p, t) => p + b.data[0] - t);
    const n = r.data.length;
    const dr = map(r, (v) => (c.data[0] * 2 * v) / n); // d mean(r^2) / dr = 2r / N
    const grads = { X: outer(dr, w), w: matmul(transpose(X), dr), b: scalar(sum(dr)), y: map(dr, (v) => -v) };
    return [scalar(sum(map(r, (v) => v * v)) / n), grads];
  },
  logistic_regression: ({ X, w, b, y }, c) => {
    const z = map(matmul(X, w), (v) => v + b.data[0]);
    const n = z.data.length;
    const f = sum(zip(z, y, (u, t) => softplusF(u) - t * u)) / n;
    const dz = zip(z, y, (u, t) => (c.data[0] * (sigmoidF(u) - t)) / n); // softplus' = sigmoid
    const grads = { X: outer(dz, w), w: matmul(transpose(X), dz), b: scalar(sum(dz)), y: map(z, (u) => (-c.data[0] * u) / n) };
    return [scalar(f), grads];
  },
  softmax: ({ x }, c) => {
    const y = softmax(x);
    return [y, { x: softmaxBack(y, c) }];
  },
  log_softmax: ({ x }, c) => {
    const m = x.shape[x.shape.length - 1];
    const s = softmax(x);
    const dx = rowwise(c, (row, r) => {
      const total = row.reduce((a, v) => a + v, 0);
      return row.map((v, j) => v - s.data[r * m + j] * total); // c - softmax(x) sum(c)
    });
    return [logSoftmax(x), { x: dx }];
  },
  logsumexp: ({ x }, c) => {
    const m = x.shape[x.shape.length - 1];
    return [rowwise(x, (row) => [logsumexpRow(row)], 1), { x: zip(softmax(x), x, (s, _, i) => c.data[Math.floor(i / m)] * s) }];
  },
  softmax_cross_entropy: ({ logits, labels }, c) => {
    const [loss, back] = crossEntropy(logits, labels);
    return [loss, { logits: back(c.data[0]) }];
  },
  mse: ({ pred, target }, c) => {
    const r = zip(pred, target, (p, t) => p - t);
    const n = r.data.length;
    const d = map(r, (v) => (c.data[0] * 2 * v) / n);
    return [scalar(sum(map(r, (v) => v * v)) / n), { pred: d, target: map(d, (v) => -v) }];
  },
  kl_divergence: ({ p_logits, q_logits }, c) => {
    const lp = logSoftmax(p_logits);
    const lq = logSoftmax(q_logits);
    const p = map(lp, Math.exp);
    const q = map(lq, Math.exp);
    const g = zip(lp, lq, (a, b) => a - b);
    const n = rowCount(p);
    const scale = c.data[0] / n;
    const f = sum(zip(p, g, (a, b) => a * b)) / n;
    // d/dp_logits = softmax pullback of (log p - log q); d/dq_logits = q - p
    return [scalar(f), { p_logits: map(softmaxBack(p, g), (v) => scale * v), q_logits: zip(q, p, (a, b) => scale * (a - b)) }];
  },
  layernorm: ({ x, gamma, beta }, c) => {
    const [y, back] = layerNorm(x, gamma, beta);
    const [dx, dgamma, dbeta] = back(c);
    return [y, { x: dx, gamma: dgamma, beta: dbeta }];
  },
  rmsnorm: ({ x, gamma }, c) => {
    const m = gamma.data.length;
    const rinv = rowwise(x, (row) => [1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / m + 1e-6)], 1);
    const r = (i) => rinv.data[Math.floor(i / m)];
    const y = zip(x, x, (v, _, i) => gamma.data[i % m] * v * r(i));
    // dx = r (dxh - r^2 x mean(dxh x)), dxh = c gamma
    const dx = rowwise(x, (row, k) => {
      const d = Array.from(row, (_, j) => c.data[k * m + j] * gamma.data[j]);
      const mdx = d.reduce((a, v, j) => a + v * row[j], 0) / m;
      const rk = rinv.data[k];
      return row.map((v, j) => rk * (d[j] - rk * rk * v * mdx));
    });
    return [y, { x: dx, gamma: sumRows(zip(c, x, (g, v, i) => g * v * r(i))) }];
  },
  linear: ({ x, W, b }, c) => {
    const [y, back] = linearLayer(x, W, b);
    const [dx, dW, db] = back(c);
    return [y, { x: dx, W: dW, b: db }];
  },
  embedding: ({ ids, table }, c) => {
    const d = table.shape[1];
    const out = zeros([ids.data.length, d]);
    const dtable = zeros(table.shape);
    ids.data.forEach((id, r) => {
      for (let j = 0; j < d; j++) {
        out.data[r * d + j] = table.data[id * d + j];
        dtable.data[id * d + j] += c.data[r * d + j]; // a repeated id accumulates every row
      }
    });
    return [out, { table: dtable }];
  },
  mlp: ({ x, labels, W1, b1, W2, b2 }, c) => {
    const [h, back1] = linearLayer(x, W1, b1);
    const act = map(h, (v) => ACTIVATIONS.gelu_tanh(v)[0]);
    const [logits, back2] = linearLayer(act, W2, b2);
    const [loss, backLoss] = crossEntropy(logits, labels);
    const [da, dW2, db2] = back2(backLoss(c.data[0]));
    const [dx, dW1, db1] = back1(zip(da, h, (g, v) => g * ACTIVATIONS.gelu_tanh(v)[1]));
    return [loss, { x: dx, W1: dW1, b1: db1, W2: dW2, b2: db2 }];
  },
  attention: ({ q, k, v }, c) => {
    const [out, back] = attend(q, k, v, false);
    const [dq, dk, dv] = back(c);
    return [out, { q: dq, k: dk, v: dv }];
  },
  causal_self_attention: ({ x, Wq, Wk, Wv, Wo }, c) => {
    const [out, back] = selfAttention(x, Wq, Wk, Wv, Wo);
    const [dx, dWq, dWk, dWv, dWo] = back(c);
    return [out, { x: dx, Wq: dWq, Wk: dWk, Wv: dWv, Wo: dWo }];
  },
  transformer_block: (g, c) => {
    const add = (a, b) => zip(a, b, (u, w) => u + w);
    const [n1, backLn1] = layerNorm(g.x, g.ln1_gamma, g.ln1_beta);
    const [a, backAttn] = selfAttention(n1, g.Wq, g.Wk, g.Wv, g.Wo);
    const h = add(g.x, a);
    const [n2, backLn2] = layerNorm(h, g.ln2_gamma, g.ln2_beta);
    const [u, backFc1] = linearLayer(n2, g.W1, g.b1);
    const [f, backFc2] = linearLayer(map(u, (z) => ACTIVATIONS.gelu_tanh(z)[0]), g.W2, g.b2);
    const [dact, dW2, db2] = backFc2(c);
    const [dn2, dW1, db1] = backFc1(zip(dact, u, (d, z) => d * ACTIVATIONS.gelu_tanh(z)[1]));
    const [dhLn, dg2, dbeta2] = backLn2(dn2);
    const dh = add(c, dhLn); // the residual passes c straight through
    const [dn1, dWq, dWk, dWv, dWo] = backAttn(dh);
    const [dxLn, dg1, dbeta1] = backLn1(dn1);
    const grads = { x: add(dh, dxLn), ln1_gamma: dg1, ln1_beta: dbeta1, Wq: dWq, Wk: dWk, Wv: dWv, Wo: dWo };
    Object.assign(grads, { ln2_gamma: dg2, ln2_beta: dbeta2, W1: dW1, b1: db1, W2: dW2, b2: db2 });
    return [add(h, f), grads];
  },
  adam_step: ({ p, g, m, v }, c) => {
    const [lr, b1, b2, eps] = [1e-3, 0.9, 0.999, 1e-8];
    const [c1, c2] = [1 - b1 ** 3, 1 - b2 ** 3];
    const n = p.data.length;
    const out = new Float64Array(3 * n);
    const grads = { p: zeros(p.shape), g: zeros(g.shape), m: zeros(m.shape), v: zeros(v.shape) };
    for (let i = 0; i < n; i++) {
      const gi = g.data[i];
      const m1 = b1 * m.data[i] + (1 - b1) * gi;
      const v1 = b2 * v.data[i] + (1 - b2) * gi * gi;
      const root = Math.sqrt(v1 / c2);
      const den = root + eps;
      out[i] = p.data[i] - (lr * (m1 / c1)) / den;
      out[n + i] = m1;
      out[2 * n + i] = v1;
      const [cp, cm, cv] = [c.data[i], c.data[n + i], c.data[2 * n + i]];
      const dm1 = cm - (cp * lr) / den / c1; // dp'/dm' = -lr / (den c1)
      const dv1 = cv + (cp * lr * (m1 / c1)) / (den * den) / (2 * root) / c2; // dp'/dv' = lr mhat / (den^2 2 root c2)
      grads.p.data[i] = cp;
      grads.g.data[i] = dm1 * (1 - b1) + dv1 * (1 - b2) * 2 * gi;
      grads.m.data[i] = dm1 * b1;
      grads.v.data[i] = dv1 * b2;
    }
    return [T([3, n], out), grads];
  },
};

for (const name of Object.keys(ACTIVATIONS)) {
  CASES[name] = ({ x }, c) => [map(x, (v) => ACTIVATIONS[name](v)[0]), { x: zip(x, c, (v, g) => g * ACTIVATIONS[name](v)[1]) }];
}

// ---------------------------------------------------------------------------- protocol

// Non-finite floats travel as the strings "inf", "-inf" and "nan" (JSON has no literal for them).
const NONFINITE = { inf: Infinity, "-inf": -Infinity, nan: NaN };
const fromJson = (v) => (typeof v === "string" ? NONFINITE[v] : Number(v));
const toJson = (x) => (Number.isFinite(x) ? x : Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf");
const decode = (a) => ({ shape: a.shape, data: Float64Array.from(a.data, fromJson), dtype: a.dtype });
const encode = (t) => ({ dtype: "float64", shape: t.shape, data: Array.from(t.data, toJson) });

function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    return { id: null, error: `bad request: ${err.message}` };
  }
  const id = request.id ?? null;
  const fn = CASES[request.case];
  if (typeof fn !== "function" || !Object.hasOwn(CASES, request.case)) return { id, error: "unsupported" };
  try {
    const inputs = Object.fromEntries(Object.entries(request.inputs).map(([k, a]) => [k, decode(a)]));
    const [value, vjp] = fn(inputs, decode(request.cotangent));
    return { id, value: encode(value), vjp: Object.fromEntries(Object.entries(vjp).map(([k, t]) => [k, encode(t)])) };
  } catch (err) {
    return { id, error: `${request.case} failed: ${err.message}` };
  }
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  if (line.trim() !== "") process.stdout.write(JSON.stringify(handle(line)) + "\n");
});
