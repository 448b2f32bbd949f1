"""Issue 18 item 5: ``normalize=(mean, std)``, bitwise the same in torch and tf.data."""

import numpy as np
import pytest

import shardstream as ss
from shardstream.loaders.resize import to_float

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def expected(images, resize, mean, std):
    """The documented formula: to_float, then (x - mean) / std in float32, per channel (NHWC)."""
    x = to_float(images, resize)
    return (x - np.float32(mean)) / np.float32(std)


@pytest.mark.parametrize("resize", [None, (32, 24)])
def test_normalize_is_the_formula_and_the_same_in_both_frameworks(loader_splits, resize):
    location, images, _ = loader_splits["npy"]
    kw = dict(batch_size=100, resize=resize, shuffle=False, normalize=((0.286,), (0.353,)))
    torch_batches = [X.numpy().transpose(0, 2, 3, 1) for X, _ in
                     ss.torch_loader(location, num_workers=2, **kw)]
    tf_batches = [X.numpy() for X, _ in ss.tf_dataset(location, num_parallel=2, **kw)]
    assert len(torch_batches) == len(tf_batches) == 10
    for k, (a, b) in enumerate(zip(torch_batches, tf_batches)):
        assert np.array_equal(a, b)
        assert np.array_equal(a, expected(images[100 * k:100 * (k + 1)], resize, 0.286, 0.353))
    assert torch_batches[0].min() < -0.8 and torch_batches[0].max() > 1.9   # ~(0 - m)/s, (1 - m)/s


def test_normalize_per_channel_rgb(loader_splits):
    location, images, _ = loader_splits["rgb"]
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    kw = dict(batch_size=64, shuffle=False, normalize=(mean, std))
    X_torch = next(iter(ss.torch_loader(location, worker_mode="process", num_workers=1, **kw)))[0]
    X_tf = next(iter(ss.tf_dataset(location, **kw)))[0].numpy()
    want = (to_float(images[:64]) - np.float32(mean)) / np.float32(std)
    assert np.array_equal(X_tf, want)
    assert np.array_equal(X_torch.numpy().transpose(0, 2, 3, 1), want)


@pytest.mark.parametrize("bad, match", [
    (((0.5, 0.5), (0.2, 0.2)), r"one per channel \(1\)"), ((0.5,), r"must be \(mean, std\)"),
    (((0.5,), (0.0,)), r"std > 0"), (((float("nan"),), (1.0,)), r"finite")])
def test_bad_normalize_is_refused(loader_splits, bad, match):
    location = loader_splits["npy"][0]
    for make in (ss.torch_loader, ss.tf_dataset):
        with pytest.raises(ss.errors.InputError, match=match):
            make(location, batch_size=10, normalize=bad)
