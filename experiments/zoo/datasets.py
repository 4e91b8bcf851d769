"""Built-in data factories, on data that ships inside scikit-learn (no download).

The contract a user's own factory follows: a callable taking the keyword arguments in
`data.params` and returning either `(x, y)` arrays (then `data.batch_size`, `shuffle`,
`validation_split` and `drop_remainder` apply), or a mapping `{"train": ..., "validation": ...}`
whose entries are arrays, a batched `tf.data.Dataset`, a `keras.utils.PyDataset` or a
generator (set `trainer.steps_per_epoch` for generators).
"""

from __future__ import annotations

import numpy as np


def load_digits(
    limit: int | None = None, shuffle_seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8×8 handwritten digits, flattened to 64 features in [0, 1].

    The file lists the digits writer by writer, so `validation_split` (the last fraction, as
    Keras takes it) would validate on writers never seen in training and score some 6 points
    under what the model does on new digits of known writers. They are put in one fixed random
    order first (`shuffle_seed`; None keeps the file's order), as `train_test_split` would.
    """
    from sklearn import datasets

    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        x, y = x[order], y[order]
    return (x[:limit], y[:limit]) if limit else (x, y)


def load_digits_images(
    limit: int | None = None, shuffle_seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The same digits as 8×8×1 images, for convolutional models."""
    x, y = load_digits(limit, shuffle_seed)
    return x.reshape(-1, 8, 8, 1), y


def load_diabetes() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's diabetes regression set (442 patients, 10 features), target standardised."""
    from sklearn import datasets

    data = datasets.load_diabetes()
    x = data.data.astype("float32")
    y = data.target.astype("float32")
    y = (y - y.mean()) / y.std()
    return x, y.reshape(-1, 1)
