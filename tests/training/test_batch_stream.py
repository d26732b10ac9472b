"""The data stream: epochs are permutations, shards add up to the global batch, keyed noise splits exactly."""
import pytest
import torch

from pyseg_noise.data import LAH5Dataset
from pyseg_noise.training.batch_stream import ShardedBatchSampler, StreamDataset, stream_loader
from pyseg_noise.training.keyed_random import keyed_normal
from pyseg_noise.training.method import Batch

from .tiny_runs import CROP


pytestmark = pytest.mark.usefixtures("one_thread")


def test_shards_add_up_to_the_global_batch():
    single = list(ShardedBatchSampler(4, start=3, stop=6))
    halves = [list(ShardedBatchSampler(4, rank=r, world_size=2, start=3, stop=6)) for r in range(2)]
    assert single == [[12, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 23]]
    assert [a + b for a, b in zip(*halves)] == single
    with pytest.raises(ValueError, match="divisible"):
        ShardedBatchSampler(3, rank=0, world_size=2, stop=1)


def test_every_epoch_visits_every_case_once(tiny_h5):
    ds = StreamDataset(LAH5Dataset(tiny_h5, "train", crop_size=CROP, seed=0), seed=7)
    n = len(ds)
    for epoch in range(3):
        cases = [ds.locate(p)[1] for p in range(epoch * n, (epoch + 1) * n)]
        assert sorted(cases) == list(range(n))
        assert {ds.locate(p)[0] for p in range(epoch * n, (epoch + 1) * n)} == {epoch}
    orders = {tuple(ds.permutation(e)) for e in range(6)}
    assert len(orders) > 1  # the order changes between epochs


def test_items_depend_only_on_the_position(tiny_h5):
    a = StreamDataset(LAH5Dataset(tiny_h5, "train", crop_size=CROP, seed=0), seed=1)
    b = StreamDataset(LAH5Dataset(tiny_h5, "train", crop_size=CROP, seed=0), seed=1)
    positions = [9, 2, 5, 9]
    first = [a[p] for p in positions]
    second = [b[p] for p in reversed(positions)][::-1]  # other order, other object
    for x, y in zip(first, second):
        assert x["case"] == y["case"] and x["position"] == y["position"]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    assert torch.equal(first[0]["image"], first[3]["image"])


def test_loader_resumes_mid_stream(tiny_h5):
    ds = StreamDataset(LAH5Dataset(tiny_h5, "train", crop_size=CROP, seed=0), seed=1)
    full = list(stream_loader(ds, 2, rank=0, world_size=1, start=0, stop=5))
    tail = list(stream_loader(ds, 2, rank=0, world_size=1, start=3, stop=5))
    for x, y in zip(full[3:], tail):
        assert torch.equal(x["image"], y["image"]) and x["position"].tolist() == y["position"].tolist()


def test_keyed_noise_is_shard_invariant():
    whole = keyed_normal([8, 9, 10, 11], (1, 4, 4, 2), seed=3, stream=1)
    halves = torch.cat([keyed_normal([8, 9], (1, 4, 4, 2), seed=3, stream=1),
                        keyed_normal([10, 11], (1, 4, 4, 2), seed=3, stream=1)])
    assert torch.equal(whole, halves)
    assert not torch.equal(whole, keyed_normal([8, 9, 10, 11], (1, 4, 4, 2), seed=3, stream=2))
    assert abs(float(keyed_normal(list(range(64)), (1, 8, 8, 8), seed=0, stream=0).std()) - 1.0) < 0.02
    batch = Batch(image=torch.zeros(2, 1, 4, 4, 2), label=torch.zeros(2, 4, 4, 2, dtype=torch.long),
                  cases=["a", "b"], positions=[10, 11], seed=3)
    assert torch.equal(batch.normal_like_image(1), whole[2:])
