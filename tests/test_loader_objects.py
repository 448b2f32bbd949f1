"""Issue 18 item 7: the loader objects a user inspects -- ``repr``, ``.classes``, ``len()``."""

import pytest

import shardstream as ss

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


@pytest.fixture(scope="module")
def location(loader_splits):
    return loader_splits["npy"][0]   # 1,000 samples, classes "a" .. "j"


def test_torch_loader_repr_classes_and_len(location):
    loader = ss.torch_loader(location, batch_size=64, resize=(32, 24), epoch=3, rank=1,
                             world_size=2, num_workers=2, shuffle_buffer=300)
    assert loader.classes == tuple("abcdefghij")
    assert len(loader) == 8   # 500 samples of rank 1 in batches of 64
    assert repr(loader) == (
        f"ShardLoader({location!r}, 1000 samples, batch_size=64, resize=(32, 24), epoch=3, "
        f"rank=1/world_size=2, num_workers=2 (thread), len=8)")
    loader.load_state_dict({"seed": 0, "epoch": 3, "batch": 5})
    assert len(loader) == 3 and repr(loader).endswith("num_workers=2 (thread), len=3)")
    loader.set_epoch(4)
    assert "epoch=4," in repr(loader) and repr(loader).endswith("len=8)")
    plain = ss.torch_loader(location, batch_size=100, num_workers=2, worker_mode="process")
    assert repr(plain) == (
        f"ShardLoader({location!r}, 1000 samples, batch_size=100, resize=None, epoch=0, "
        f"rank=0/world_size=1, num_workers=2 (process), len=10)")
    assert len(list(ss.torch_loader(location, batch_size=100))) == 10


def test_tf_dataset_classes_and_len(location):
    ds = ss.tf_dataset(location, batch_size=64, num_parallel=2, shuffle_buffer=300)
    assert ds.classes == tuple("abcdefghij")
    assert len(ds) == 16 == int(ds.cardinality())   # 1000 = 15 * 64 + 40
    assert len(list(ds)) == 16
    assert len(ss.tf_dataset(location, batch_size=64, drop_last=True, rank=1,
                             world_size=2)) == 7
