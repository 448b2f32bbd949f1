"""One worker of a ``MultiWorkerMirroredStrategy`` job (run by tests/test_distributed_tf.py
with ``TF_CONFIG`` set, and by docs/distributed.md's recipe): trains a tiny Keras model for
one epoch on ``strategy.distribute_datasets_from_function(ss.tf_dataset_fn(...))`` and saves
every batch the input pipeline of this worker handed to ``fit``, in order, to ``OUT``.

    python tests/tf_multiworker.py LOCATION GLOBAL_BATCH OUT.npz
"""

import sys

import numpy as np
import tensorflow as tf

import shardstream as ss


class Model(tf.keras.Sequential):
    """A Sequential model that builds itself from the input signature in ``fit``.

    Keras 3 (3.15 here) cannot ``fit`` under a MultiWorkerMirroredStrategy of more than one
    worker (keras-team/keras#20585, open): before the first epoch it takes one batch from the
    distributed dataset and all-reduces it to trace the model, which fails with "Attempt to
    convert a value (PerReplica...) to a Tensor".  This override builds from the dataset's
    ``element_spec`` instead (and consumes no batch).  Its second such bug: each step's
    scalar logs are all-reduced with a mean along axis 0, which a scalar lacks; ``train_step``
    returns them as shape (1,)."""

    element_spec = None

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=self.element_spec)

    def train_step(self, data):
        return {k: tf.reshape(v, [1]) for k, v in super().train_step(data).items()}


def main(location, global_batch, out):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    seen = []

    def record(X, y):
        seen.append((X.copy(), y.copy()))
        return X, y

    fn = ss.tf_dataset_fn(location, global_batch_size=global_batch, seed=5, epoch=1,
                          shuffle_buffer=300)

    def recorded(input_context):
        ds = fn(input_context)
        spec = ds.element_spec

        def through(X, y):
            X2, y2 = tf.numpy_function(record, [X, y], [tf.float32, tf.int32])
            return tf.ensure_shape(X2, spec[0].shape), tf.ensure_shape(y2, spec[1].shape)

        return ds.map(through)

    Model.element_spec = tuple(tf.TensorSpec((None,) + s.shape[1:], s.dtype)
                               for s in ss.tf_dataset(location, batch_size=1).element_spec)
    dist_ds = strategy.distribute_datasets_from_function(recorded)
    with strategy.scope():
        model = Model([tf.keras.Input((28, 28, 1)), tf.keras.layers.Flatten(),
                                     tf.keras.layers.Dense(10)])
        model.compile(optimizer="sgd",
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(dist_ds, epochs=1, verbose=0)
    np.savez(out, X=np.concatenate([x for x, _ in seen]), y=np.concatenate([y for _, y in seen]),
             sizes=[len(y) for _, y in seen], loss=history.history["loss"],
             replicas=strategy.num_replicas_in_sync,
             weights=model.layers[-1].get_weights()[0])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
