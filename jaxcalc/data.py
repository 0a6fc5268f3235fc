"""The handwritten-digits data set: a fixed train/test split, standardized, float32.

scikit-learn's ``load_digits`` holds 1,797 images of 8x8 pixels (values 0..16), ten
classes. The split is fixed: a permutation drawn from ``numpy.random.default_rng(SPLIT_SEED)``
(PCG64, the same on every platform) puts the first ``n_test = round(TEST_FRACTION * 1797) = 359``
shuffled images in the test set and the other 1,438 in the training set. Features are
standardized with the *training* set's statistics, x' = (x - mean) / std per pixel, with
std = 1 where a pixel is constant (the always-blank border pixels), so no test information
leaks into training.

scikit-learn is an optional extra: ``pip install 'jaxcalc[data]'``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["SPLIT_SEED", "TEST_FRACTION", "Digits", "MissingExtraError", "load_digits", "split_indices"]

SPLIT_SEED = 20240917  # seed of the fixed train/test permutation
TEST_FRACTION = 0.2  # share of the images held out for testing


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says how to install it."""


class Digits(NamedTuple):
    """Standardized digits: x_* (N, 64) float32, y_* (N,) int32 labels in [0, 10)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        return 10


def split_indices(n: int, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> tuple:
    """(train_idx, test_idx): a seeded permutation of range(n), the first round(f * n) for testing."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise MissingExtraError("the digits data needs scikit-learn: pip install 'jaxcalc[data]'") from None
    bunch = sk_load_digits()
    return np.asarray(bunch.data, np.float64), np.asarray(bunch.target, np.int32)


def load_digits(test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> Digits:
    """The fixed, standardized, float32 train/test split of scikit-learn's digits (see module doc)."""
    x, y = _raw_digits()
    train, test = split_indices(len(x), test_fraction, seed)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def scale(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    return Digits(scale(x[train]), y[train].copy(), scale(x[test]), y[test].copy())
