"""tf_dataset's passes: a stream that finishes before another has started does not end the
pass (a race seen with num_parallel=4 once batches got faster)."""

import numpy as np

import shardstream as ss
from shardstream.loaders.resize import to_float_reference
from shardstream.loaders.tf_loader import CHUNK


def test_a_pass_lasts_until_every_stream_has_finished(loader_splits):
    location, images, labels = loader_splits["npy"]
    ds = ss.tf_dataset(location, batch_size=100, num_parallel=2, shuffle=False)
    passes = ds._shardstream_passes
    assert all(len(ch) for ch in passes.chunks)
    pid = passes.new_pass()
    first = [passes.next_chunk(pid, 0, i) for i in range(len(passes.chunks[0]))]
    # stream 1 starts only now, after stream 0 handed out its last chunk
    second = [passes.next_chunk(pid, 1, i) for i in range(len(passes.chunks[1]))]
    assert int(pid) not in passes.open  # both done: the pass's state is dropped
    X0, y0 = first[0]
    X1, y1 = second[0]
    # unshuffled: stream 0 starts at batch 0, stream 1 at batch CHUNK (runs of CHUNK batches)
    assert np.array_equal(X0[0], to_float_reference(images[:100]))
    assert np.array_equal(X1[0], to_float_reference(images[100 * CHUNK:100 * CHUNK + 100]))
    assert np.array_equal(y1[0], labels[100 * CHUNK:100 * CHUNK + 100])


def test_autotuning_is_off_and_the_users_options_win(loader_splits):
    """tf.data's model-based autotuning is off in our pipeline (docs/benchmarks.md: it held
    passes to a fixed 0.64 s); a user's own ``with_options`` turns it back on, and the batches
    do not depend on it."""
    import tensorflow as tf

    location, images, labels = loader_splits["npy"]
    ds = ss.tf_dataset(location, batch_size=100, resize=(14, 14), num_parallel=2, seed=3)
    assert ds.options().autotune.enabled is False
    again = tf.data.Options()
    again.autotune.enabled = True
    tuned = ds.with_options(again)
    assert tuned.options().autotune.enabled is True
    ours = [(X.numpy(), y.numpy()) for X, y in ds]
    theirs = [(X.numpy(), y.numpy()) for X, y in tuned]
    assert len(ours) == len(theirs) == len(ds)
    assert all(np.array_equal(a, c) and np.array_equal(b, d)
               for (a, b), (c, d) in zip(ours, theirs))
    assert np.array_equal(np.sort(np.concatenate([y for _, y in ours])), np.sort(labels))


def test_iterated_inside_a_tf_function_the_same_batches(loader_splits):
    """``model.fit`` (and a user's ``tf.function`` loop) takes the elements in the graph, not
    through Python (docs/loaders.md): the same batches, bit for bit, for 1 and 2 streams, and
    with ``reshuffle_each_iteration`` each call is the next epoch."""
    import tensorflow as tf

    location, _, _ = loader_splits["npy"]

    @tf.function
    def collect(ds):
        xs = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False)
        ys = tf.TensorArray(tf.int32, size=0, dynamic_size=True, infer_shape=False)
        i = tf.constant(0)
        for X, y in ds:
            xs, ys, i = xs.write(i, X), ys.write(i, y), i + 1
        return xs.concat(), ys.concat()

    want = [(X.numpy(), y.numpy()) for X, y in
            ss.tf_dataset(location, batch_size=64, resize=(32, 32), seed=4)]
    X_all, y_all = np.concatenate([X for X, _ in want]), np.concatenate([y for _, y in want])
    for parallel in (1, 2):
        ds = ss.tf_dataset(location, batch_size=64, resize=(32, 32), seed=4,
                           num_parallel=parallel)
        X, y = collect(ds)
        assert np.array_equal(X.numpy(), X_all) and np.array_equal(y.numpy(), y_all)
    epochs = ss.tf_dataset(location, batch_size=64, resize=(32, 32), seed=4, num_parallel=2,
                           reshuffle_each_iteration=True)
    first, second = collect(epochs), collect(epochs)
    assert np.array_equal(first[1].numpy(), y_all)
    nxt = np.concatenate([y for _, y in ss.tf_dataset(location, batch_size=64, seed=4,
                                                      epoch=1)])
    assert np.array_equal(second[1].numpy(), nxt) and not np.array_equal(nxt, y_all)
