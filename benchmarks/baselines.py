"""Labelled baselines for the personalization benchmarks: backprop fine-tuning and SVD adaptation.

Both start from exactly the source model that edgeprune personalizes: its float32 .tflite weights
are copied back into the Keras architecture that produced them (FSDD's VGG-7-like CNN), so every
method starts from the same numbers.

- finetune: all weights, Adam, batch 64, 10 epochs (the paper's lr 1e-2, and a sane 1e-3).
- svd: Xue et al. (2014), "Singular value decomposition based low-footprint speaker adaptation":
  each dense weight W ≈ (U_k √Σ_k) M (√Σ_k V_kᵀ) with M = I inserted; only M is trained.
"""

from __future__ import annotations

import numpy as np

from edgeprune.layers import scan
from edgeprune.model import Model


def _tf():
    from benchmarks.fsdd import _tf

    return _tf()


def source_keras(tflite_path, input_shape):
    """The FSDD Keras model holding the weights of a float32 source .tflite."""
    from benchmarks.fsdd import build_model

    model = Model.load(tflite_path)
    keras = build_model(input_shape)
    weighted = [layer for layer in keras.layers if layer.weights]
    found = scan(model).layers
    if len(weighted) != len(found):
        raise ValueError(f"{tflite_path}: {len(found)} layers, the Keras model has {len(weighted)}")
    for layer, tfl in zip(weighted, found):
        w = model.dequantized(tfl.weight)
        kernel = w.transpose(1, 2, 3, 0) if tfl.kind == "conv" else w.T
        layer.set_weights(
            [kernel.astype(np.float32), model.dequantized(tfl.bias).astype(np.float32)]
        )
    return keras


def _accuracy(keras, x, y) -> float:
    return float(np.mean(keras.predict(x, verbose=0, batch_size=256).argmax(axis=1) == y))


def finetune(tflite_path, adapt, test, lr: float, epochs: int = 10, seed: int = 0) -> float:
    """Held-out accuracy after fine-tuning every weight with labels."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    keras = source_keras(tflite_path, adapt[0].shape[1:])
    keras.compile(
        tf.keras.optimizers.Adam(lr),
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    keras.fit(adapt[0], adapt[1], batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    return _accuracy(keras, *test)


def svd(tflite_path, adapt, test, rank: int = 32, lr: float = 1e-3, epochs: int = 10, seed=0):
    """Held-out accuracy after SVD adaptation of the dense layers (only the k×k M's train)."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    source = source_keras(tflite_path, adapt[0].shape[1:])
    layers = tf.keras.layers
    x = inputs = tf.keras.Input(adapt[0].shape[1:])
    for layer in source.layers:
        if isinstance(layer, layers.Dense):
            x = _svd_dense(layer, x, rank)
        else:
            layer.trainable = False
            x = layer(x)
    keras = tf.keras.Model(inputs, x)
    keras.compile(
        tf.keras.optimizers.Adam(lr),
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    keras.fit(adapt[0], adapt[1], batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    return _accuracy(keras, *test)


def _svd_dense(layer, x, rank: int):
    """Dense(W, b) as left(√Σ Vᵀ) → M (k×k, trainable, = I) → right(U √Σ) + b, activation."""
    tf = _tf()
    layers = tf.keras.layers
    kernel, bias = layer.get_weights()  # kernel [in, out] = (W_tf)ᵀ
    u, s, vt = np.linalg.svd(kernel, full_matrices=False)
    k = min(rank, s.size)
    root = np.sqrt(s[:k])
    first = layers.Dense(k, use_bias=False, trainable=False)
    middle = layers.Dense(k, use_bias=False, kernel_initializer="identity")
    last = layers.Dense(kernel.shape[1], activation=layer.activation, trainable=False)
    h = first(x)
    first.set_weights([(u[:, :k] * root).astype(np.float32)])
    h = middle(h)
    y = last(h)
    last.set_weights([(root[:, None] * vt[:k]).astype(np.float32), bias])
    return y
