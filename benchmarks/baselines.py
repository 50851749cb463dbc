"""Labelled baselines for the personalization benchmarks: backprop fine-tuning and SVD adaptation.

Both start from exactly the source model that edgeprune personalizes: the float32 .tflite graph is
replayed op by op in TensorFlow with its weights as variables (:class:`Replay`), so every method,
on FSDD and CIFAR alike, starts from the same numbers. Batch norms were folded into the convs by
the converter, so fine-tuning trains the deployed graph (no batch statistics, no dropout).

- finetune: every weight and bias, Adam, batch 64, 10 epochs (the paper's lr 1e-2, and 1e-3).
- svd: Xue et al. (2014), "Singular value decomposition based low-footprint speaker adaptation":
  each dense weight W ≈ (U_k √Σ_k) M (√Σ_k V_kᵀ) with M = I inserted; only the M's train.
"""

from __future__ import annotations

import os

import numpy as np

from edgeprune.layers import ACTIVATIONS, PADDINGS, scan
from edgeprune.model import Model

BATCH = 64


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one Replay per individual: retracing is expected
    return tf


def _activate(tf, x, name: str):
    if name == "NONE":
        return x
    if name == "RELU":
        return tf.nn.relu(x)
    if name == "RELU6":
        return tf.nn.relu6(x)
    raise ValueError(f"replay: fused activation {name} not supported")


class Replay:
    """A float32 .tflite graph as a differentiable TensorFlow function of its layer weights.

    Supports the ops of the benchmark source models: CONV_2D, DEPTHWISE_CONV_2D,
    FULLY_CONNECTED, ADD, MEAN, MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE.
    """

    def __init__(self, tflite_path, svd_rank: int | None = None):
        self.tf = tf = _tf()
        self.model = model = Model.load(tflite_path)
        self.layers = {layer.op: layer for layer in scan(model).layers}
        self.weights: dict[int, list] = {}  # op → [kernel, bias] variables
        self.adapters: dict[int, tuple] = {}  # FC op → (left, M, right) for SVD adaptation
        for op, layer in self.layers.items():
            w = model.dequantized(layer.weight).astype(np.float32)
            b = model.dequantized(layer.bias).astype(np.float32) if layer.bias is not None else 0
            bias = tf.Variable(np.broadcast_to(b, w.shape[layer.out_axis]).astype(np.float32))
            if layer.kind == "conv":
                kernel = w.transpose(1, 2, 3, 0)  # [O, kh, kw, I] → [kh, kw, I, O]
            elif layer.kind == "depthwise":
                c = model.tensor(layer.input).shape[3]
                kernel = w[0].reshape(w.shape[1], w.shape[2], c, layer.depth_multiplier)
            elif layer.kind == "dense":
                kernel = w.T
            else:
                raise ValueError(f"replay: {layer.opcode} with a constant operand not supported")
            self.weights[op] = [tf.Variable(kernel), bias]
            if svd_rank and layer.kind == "dense":
                u, s, vt = np.linalg.svd(kernel, full_matrices=False)
                k = min(svd_rank, s.size)
                root = np.sqrt(s[:k])
                self.adapters[op] = (
                    tf.constant((u[:, :k] * root).astype(np.float32)),
                    tf.Variable(np.eye(k, dtype=np.float32)),
                    tf.constant((root[:, None] * vt[:k]).astype(np.float32)),
                )
        self.trainable = (
            [a[1] for a in self.adapters.values()]
            if svd_rank
            else [v for pair in self.weights.values() for v in pair]
        )
        self._forward = tf.function(self._graph, reduce_retracing=True)

    def __call__(self, x):
        return self._forward(x)

    def _graph(self, x):
        tf = self.tf
        model = self.model
        graph = model.main
        values = {graph.inputs[0]: x}

        def value(index: int):
            if index in values:
                return values[index]
            return tf.constant(model.dequantized(index).astype(np.float32))

        for op in graph.operators:
            opts = op.options
            layer = self.layers.get(op.index)
            if layer is not None:
                y = self._layer(tf, layer, value(layer.input))
            elif op.opcode == "ADD":
                y = _activate(tf, value(op.inputs[0]) + value(op.inputs[1]), _fused(opts))
            elif op.opcode == "MEAN":
                axes = [int(a) for a in np.ravel(model.tensor_data(op.inputs[1]))]
                y = tf.reduce_mean(
                    value(op.inputs[0]), axis=axes, keepdims=bool(opts.get("keep_dims"))
                )
            elif op.opcode in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
                pool = tf.nn.max_pool2d if op.opcode == "MAX_POOL_2D" else tf.nn.avg_pool2d
                y = _activate(
                    tf,
                    pool(
                        value(op.inputs[0]),
                        (opts["filter_height"], opts["filter_width"]),
                        (opts["stride_h"], opts["stride_w"]),
                        _padding(opts),
                    ),
                    _fused(opts),
                )
            elif op.opcode == "RESHAPE":
                shape = model.tensor(op.outputs[0]).shape
                y = tf.reshape(value(op.inputs[0]), (-1, *shape[1:]))
            else:
                raise ValueError(f"replay: {op.opcode} (op {op.index}) not supported")
            values[op.outputs[0]] = y
        return values[graph.outputs[0]]

    def _layer(self, tf, layer, x):
        kernel, bias = self.weights[layer.op]
        if layer.kind == "dense":
            x = tf.reshape(x, (-1, layer.in_features))
            if layer.op in self.adapters:
                left, m, right = self.adapters[layer.op]
                y = ((x @ left) @ m) @ right
            else:
                y = x @ kernel
        elif layer.kind == "conv":
            # tf.nn.convolution, unlike conv2d, has CPU gradients for dilated kernels.
            y = tf.nn.convolution(x, kernel, layer.stride, layer.padding, dilations=layer.dilation)
        else:
            y = tf.nn.depthwise_conv2d(
                x, kernel, (1, *layer.stride, 1), layer.padding, dilations=layer.dilation
            )
        return _activate(tf, y + bias, layer.activation)

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([self(x[i : i + batch]).numpy() for i in range(0, len(x), batch)])

    def fit(self, x: np.ndarray, y: np.ndarray, lr: float, epochs: int, seed: int) -> None:
        """Adam on the cross-entropy of the logits, shuffled mini-batches of :data:`BATCH`."""
        tf = self.tf
        optimizer = tf.keras.optimizers.Adam(lr)
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function(reduce_retracing=True)
        def step(xb, yb):
            with tf.GradientTape() as tape:
                value = loss(yb, self._graph(xb))
            optimizer.apply_gradients(zip(tape.gradient(value, self.trainable), self.trainable))

        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for i in range(0, len(x), BATCH):
                chosen = order[i : i + BATCH]
                step(x[chosen], y[chosen])


def _fused(opts: dict) -> str:
    return ACTIVATIONS.get(opts.get("fused_activation_function", 0), "NONE")


def _padding(opts: dict) -> str:
    return PADDINGS.get(opts.get("padding", 0), "SAME")


def _adapt(tflite_path, adapt, test, lr: float, epochs: int, seed: int, svd_rank=None) -> float:
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    replay = Replay(tflite_path, svd_rank)
    replay.fit(*adapt, lr=lr, epochs=epochs, seed=seed)
    return float(np.mean(replay.predict(test[0]).argmax(axis=1) == test[1]))


def finetune(tflite_path, adapt, test, lr: float, epochs: int = 10, seed: int = 0) -> float:
    """Held-out accuracy after fine-tuning every weight with labels."""
    return _adapt(tflite_path, adapt, test, lr, epochs, seed)


def svd(tflite_path, adapt, test, rank: int = 32, lr: float = 1e-3, epochs: int = 10, seed=0):
    """Held-out accuracy after SVD adaptation of the dense layers (only the k×k M's train)."""
    return _adapt(tflite_path, adapt, test, lr, epochs, seed, svd_rank=rank)
