"""torch.distributed for real (issue 14): process groups of 2 and 3 ranks (gloo, 127.0.0.1,
free port) started with ``torch.multiprocessing.spawn``; each rank builds ``torch_loader``
WITHOUT rank / world_size, trains a tiny DDP model for one epoch and saves the batches it got.

The test then checks what a user of DDP would: every rank has the same number of batches, the
ranks are disjoint apart from the documented padding (``docs/determinism.md``: the epoch's
first ids, wrapped around, at the end of the last ranks), together they cover the epoch, and
rank r's batches are bitwise ``torch_loader(rank=r, world_size=W)`` run outside DDP.  Then the
same after a crash of every rank (resume with ``load_state_dict`` or ``start_batch``).
"""

import datetime
import os
import socket

import numpy as np
import pytest
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import shardstream as ss  # noqa: E402

BATCH = 32
ARGS = dict(batch_size=BATCH, seed=5, epoch=1, shuffle_buffer=300)
CRASH_AFTER = 4       # batches each rank trains before the simulated crash
CRASH_CODE = 17
TIMEOUT = 120         # seconds a process group may take, start to end

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(loader, model, opt, stop=None):
    """One pass of ``loader`` training ``model``: ``(X batches, y batches, len(loader) before)``
    as numpy; ``stop``: leave after that many batches."""
    xs, ys, length = [], [], len(loader)
    for X, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X.flatten(1)), y).backward()
        opt.step()
        xs.append(X.numpy().copy())
        ys.append(y.numpy().copy())
        if len(xs) == stop:
            break
    return xs, ys, length


def save(path, loader, model, xs, ys, length):
    np.savez(path, X=np.concatenate(xs), y=np.concatenate(ys), sizes=[len(y) for y in ys],
             weights=model.module.weight.detach().numpy(), length=length,
             state=[loader.state_dict()[k] for k in ("rank", "world_size", "batch")])


def rank_main(rank, world, port, location, out, mode):
    """One DDP rank.  ``mode``: ``"epoch"`` (a whole epoch with ``num_workers`` 0, then
    again with 2), ``"crash"`` (CRASH_AFTER batches with 2 workers, a checkpoint, then every
    rank dies), ``"resume"`` (from the checkpoint: the rest of the epoch with
    ``load_state_dict`` and 2 workers, then with ``start_batch`` and no workers)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT))
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(28 * 28, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = os.path.join(out, f"ckpt{rank}.pt")
    if mode == "epoch":
        for workers in (0, 2):
            loader = ss.torch_loader(location, num_workers=workers, **ARGS)  # no rank/world
            save(os.path.join(out, f"epoch-w{workers}-{rank}.npz"), loader, model,
                 *train(loader, model, opt))
    elif mode == "crash":
        loader = ss.torch_loader(location, num_workers=2, **ARGS)
        save(os.path.join(out, f"crash-{rank}.npz"), loader, model,
             *train(loader, model, opt, stop=CRASH_AFTER))
        torch.save({"loader": loader.state_dict(), "model": model.state_dict(),
                    "opt": opt.state_dict()}, ckpt)
        dist.barrier()
        os._exit(CRASH_CODE)   # no clean shutdown: the job is lost with every rank
    else:
        for how in ("state", "start"):
            saved = torch.load(ckpt)
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            if how == "state":
                loader = ss.torch_loader(location, num_workers=2, **ARGS)
                loader.load_state_dict(saved["loader"])
            else:
                loader = ss.torch_loader(location, start_batch=saved["loader"]["batch"],
                                         **ARGS)
            save(os.path.join(out, f"{how}-{rank}.npz"), loader, model,
                 *train(loader, model, opt))
    dist.barrier()
    dist.destroy_process_group()


def run_group(world, location, out, mode):
    """Start ``world`` ranks and wait for them (at most TIMEOUT s; then kill them)."""
    ctx = mp.spawn(rank_main, args=(world, free_port(), location, str(out), mode),
                   nprocs=world, join=False)
    try:
        deadline = TIMEOUT
        while not ctx.join(timeout=5):
            deadline -= 5
            assert deadline > 0, "the process group did not finish"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()


def load(out, name, rank):
    with np.load(os.path.join(out, f"{name}-{rank}.npz")) as f:
        return {k: f[k] for k in f.files}


def batches(d):
    cuts = np.cumsum(d["sizes"])[:-1]
    return list(zip(np.split(d["X"], cuts), np.split(d["y"], cuts)))


def reference(location, rank, world, **kw):
    """Rank ``rank``'s batches outside any process group, as numpy."""
    return [(X.numpy(), y.numpy())
            for X, y in ss.torch_loader(location, rank=rank, world_size=world, **ARGS, **kw)]


def sample_ids(X, images):
    """The sample id of each image in ``X`` float32 (b, 1, 28, 28): every image of the split
    is distinct, and ``X`` is exactly ``images / 255``."""
    index = {im.tobytes(): i for i, im in enumerate(images)}
    pixels = np.rint(X[:, 0] * 255).astype(np.uint8)
    return np.array([index[p.tobytes()] for p in pixels])


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_epoch(loader_splits, tmp_path, world):
    location, images, labels = loader_splits["npy"]
    assert not dist.is_initialized()
    run_group(world, location, tmp_path, "epoch")
    n = len(labels)
    pad = (-n) % world
    per_rank = (n + pad) // world
    for workers in (0, 2):
        got = [load(tmp_path, f"epoch-w{workers}", r) for r in range(world)]
        ids = []
        for r, d in enumerate(got):
            # the loader took rank and world size from the process group
            assert d["state"].tolist() == [r, world, len(d["sizes"])]
            assert int(d["length"]) == len(d["sizes"]) == -(-per_rank // BATCH)
            assert len(d["y"]) == per_rank
            want = reference(location, r, world)
            assert len(batches(d)) == len(want)
            for (X, y), (wX, wy) in zip(batches(d), want):
                assert np.array_equal(X, wX) and np.array_equal(y, wy)
            ids.append(sample_ids(d["X"], images))
            assert np.array_equal(d["y"], labels[ids[-1]])
        everything = np.concatenate(ids)
        assert sorted(set(everything.tolist())) == list(range(n))   # together: the epoch
        assert len(everything) == n + pad
        # disjoint apart from the padding: the first `pad` ids of the epoch (rank j's first
        # sample, j < pad) again as the last sample of the last `pad` ranks
        for j in range(pad):
            assert ids[world - pad + j][-1] == ids[j][0]
        # DDP really synchronised: every rank ends with the same weights
        for d in got[1:]:
            assert np.array_equal(d["weights"], got[0]["weights"])


def test_ddp_resume_after_every_rank_crashed(loader_splits, tmp_path):
    location, _, _ = loader_splits["npy"]
    world = 3
    with pytest.raises(mp.ProcessExitedException, match=f"exit code {CRASH_CODE}"):
        run_group(world, location, tmp_path, "crash")
    for r in range(world):
        assert os.path.exists(tmp_path / f"ckpt{r}.pt")
    run_group(world, location, tmp_path, "resume")
    for r in range(world):
        full = reference(location, r, world)
        before = load(tmp_path, "crash", r)
        assert len(batches(before)) == CRASH_AFTER
        for how in ("state", "start"):
            after = load(tmp_path, how, r)
            assert int(after["length"]) == len(full) - CRASH_AFTER
            assert after["state"].tolist() == [r, world, len(full)]
            for (X, y), (wX, wy) in zip(batches(before) + batches(after), full, strict=True):
                assert np.array_equal(X, wX) and np.array_equal(y, wy)
