"""The book's own tf.data input pipeline (D2L §4.2, TensorFlow tab), a baseline for bench and
demo.  Nothing in the loaders uses this module."""

from __future__ import annotations

from .. import config

config.quiet_tensorflow()   # before TensorFlow's import

import tensorflow as tf  # noqa: E402


def book_tf_pipeline(images, labels, batch_size, resize) -> tf.data.Dataset:
    """The book's tf.data loader (D2L §4.2, TensorFlow tab), verbatim: ``from_tensor_slices``
    of the whole array (images uint8 (N, H, W[, 1]), labels (N,)) / 255 -> ``batch`` ->
    ``map(resize_with_pad)`` -> ``shuffle(N)``; batches X float32 (b, h, w, 1), y int32 (b,).
    A baseline for the demo and the benchmarks, not used by the loaders."""
    images = images.reshape(images.shape[:3])

    def process(X, y):
        return tf.expand_dims(X, axis=3) / 255, tf.cast(y, dtype="int32")

    def resize_fn(X, y):
        return tf.image.resize_with_pad(X, *resize), y

    return (tf.data.Dataset.from_tensor_slices(process(images, labels)).batch(batch_size)
            .map(resize_fn).shuffle(len(images)))
