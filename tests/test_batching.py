"""Tests of batching.py: the length-bucketed sampler (deterministic, resumable, sharded), the
Loader's batches, and the class weights.
"""

import json

import numpy as np
import pytest
import torch
from conftest import one_line_error

import batching
import files
import wordpiece


def varied_lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(3, 120, size=n)


def test_padding_fraction_exact():
    assert batching.padding_fraction([1, 2, 3, 4], [[0, 1], [2, 3]]) == pytest.approx(1 / 6)
    assert batching.padding_fraction([5, 5], [[0, 1]]) == 0.0


def test_sampler_deterministic_and_complete():
    lengths = varied_lengths()
    a = batching.BucketBatchSampler(lengths, 32, seed=1)
    b = batching.BucketBatchSampler(lengths, 32, seed=1)
    first = list(a)
    assert first == list(b) and len(first) == len(a) == 32
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert sorted(map(len, first)) == [8] + [32] * 31
    assert list(a) != first and a.epoch == 2  # each full pass moves on to the next epoch
    a.set_epoch(0)
    assert list(a) == first
    assert batching.BucketBatchSampler(lengths, 32, drop_last=True).__len__() == 31
    assert all(len(x) == 32 for x in batching.BucketBatchSampler(lengths, 32, drop_last=True))
    plain = list(batching.BucketBatchSampler(lengths, 400, shuffle=False))
    assert plain == [list(range(0, 400)), list(range(400, 800)), list(range(800, 1000))]


def test_bucketing_reduces_padding():
    lengths = varied_lengths()
    bucketed = batching.BucketBatchSampler(lengths, 32, seed=0).global_batches()
    random = batching.BucketBatchSampler(lengths, 32, seed=0, bucket_batches=1).global_batches()
    assert batching.padding_fraction(lengths, bucketed) < 0.05
    assert batching.padding_fraction(lengths, random) > 0.4


def test_inference_batches_by_length():
    lengths = varied_lengths()
    sampler = batching.BucketBatchSampler(lengths, 32, shuffle=False, by_length=True)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000)) and len(batches) == len(sampler) == 32
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)  # longest first
    assert batching.padding_fraction(lengths, batches) < 0.05 < batching.padding_fraction(lengths, list(
        batching.BucketBatchSampler(lengths, 32, shuffle=False)))
    # Training shuffles as before: by_length is for the unshuffled (inference) order only.
    assert list(batching.BucketBatchSampler(lengths, 32, seed=1, by_length=True)) == list(batching.BucketBatchSampler(lengths, 32, seed=1))


def test_inference_batches_hold_at_most_max_tokens():
    lengths = [64] * 10 + [20] * 30 + [3] * 50
    sampler = batching.BucketBatchSampler(lengths, 32, shuffle=False, by_length=True, max_tokens=256)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(90)) and len(sampler) == len(batches)
    assert [len(b) for b in batches] == [4, 4, 4, 12, 12, 12, 32, 10]  # 256 // its longest (64, 20), at most 32
    assert all(len(b) * max(lengths[i] for i in b) <= 256 for b in batches)
    assert [len(b) for b in batching.BucketBatchSampler([300, 2], 8, shuffle=False, by_length=True, max_tokens=256)] == [1, 1]
    # Training ignores it.
    assert list(batching.BucketBatchSampler(lengths, 32, seed=1, max_tokens=256)) == list(batching.BucketBatchSampler(lengths, 32, seed=1))


def test_few_shapes_bounds_the_shapes_of_inference_batches():
    lengths = np.random.default_rng(3).integers(1, 65, 5000)
    plain = list(batching.BucketBatchSampler(lengths, 128, shuffle=False, by_length=True, max_tokens=2048))
    few = list(batching.BucketBatchSampler(lengths, 128, shuffle=False, by_length=True, max_tokens=2048, few_shapes=True))
    assert sorted(i for b in few for i in b) == list(range(5000))  # every text once
    width = [-(-max(lengths[i] for i in b) // batching.WIDTH_STEP) * batching.WIDTH_STEP for b in few]
    assert all(len(b) & (len(b) - 1) == 0 for b in few)  # a power of two rows
    assert all(len(b) * w <= 2048 for b, w in zip(few, width, strict=True))
    shapes = {(len(b), w) for b, w in zip(few, width, strict=True)}
    assert len(shapes) <= 4 * 8  # 4 widths (16 .. 64) x 8 row counts (1 .. 128)
    assert len({(len(b), max(lengths[i] for i in b)) for b in plain}) > 2 * len(shapes)
    # Off by default, and training ignores it.
    assert few != plain
    assert list(batching.BucketBatchSampler(lengths, 32, seed=1, few_shapes=True)) == list(batching.BucketBatchSampler(lengths, 32, seed=1))


def test_loader_few_shapes_pads_to_the_width_step(cased):
    texts = [" ".join(["Hello"] * (i % 20 + 1)) for i in range(37)]
    loader = batching.Loader(texts, None, cased, 40, 8, by_length=True, few_shapes=True)
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [8, 8, 8, 8, 4, 1]
    for b in batches:
        assert b["input_ids"].shape[1] % batching.WIDTH_STEP == 0
        real = loader.lengths[b["index"].numpy()]
        assert b["attention_mask"].sum(1).tolist() == real.tolist()  # the mask still marks the real tokens
    plain = {i: row[:n] for b in batching.Loader(texts, None, cased, 40, 8, by_length=True)
             for i, row, n in zip(b["index"].tolist(), b["input_ids"], b["attention_mask"].sum(1), strict=True)}
    assert all(torch.equal(row[:n], plain[i]) for b in batches
               for i, row, n in zip(b["index"].tolist(), b["input_ids"], b["attention_mask"].sum(1), strict=True))


def test_sampler_resumes_mid_epoch():
    lengths = varied_lengths()
    sampler = batching.BucketBatchSampler(lengths, 16, seed=5)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3)
    iterator = iter(sampler)
    done = [next(iterator) for _ in range(10)]
    state = json.loads(json.dumps(sampler.state_dict()))  # survives a checkpoint file
    assert state == {"seed": 5, "epoch": 3, "batches_done": 10}
    resumed = batching.BucketBatchSampler(lengths, 16, seed=0)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert done + rest == full
    assert resumed.state_dict() == {"seed": 5, "epoch": 4, "batches_done": 0}


def test_sampler_shards_split_every_global_batch():
    lengths = varied_lengths(1001)
    shards = [list(batching.BucketBatchSampler(lengths, 10, seed=2, num_replicas=3, rank=r)) for r in range(3)]
    # 1001 texts: 100 global batches of 10 and one of 1, too small to give each of 3 ranks a part.
    assert [len(s) for s in shards] == [100, 100, 100]
    assert len(batching.BucketBatchSampler(lengths, 10, num_replicas=3, rank=0)) == 100
    flat = [i for shard in shards for batch in shard for i in batch]
    assert len(flat) == len(set(flat))
    whole = [b for b in batching.BucketBatchSampler(lengths, 10, seed=2).global_batches() if len(b) == 10]
    for step in range(len(shards[0])):
        assert sorted(i for r in range(3) for i in shards[r][step]) == sorted(whole[step].tolist())
    assert [len(shards[r][0]) for r in range(3)] == [4, 3, 3]
    with pytest.raises(ValueError):
        batching.BucketBatchSampler(lengths, 10, num_replicas=2, rank=2)


def test_class_weights():
    weights = batching.class_weights([0, 0, 0, 1], num_classes=2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    assert weights.dtype == torch.float32
    with pytest.raises(files.DataError) as e:
        batching.class_weights([0, 0, 2])
    one_line_error(e, "[1]")


def test_loader_batches(cased):
    texts = ["Hello", "Hello World", "Hello World ! Hello", "World"]
    loader = batching.Loader(texts, [0, 1, 1, 0], cased, max_length=5, batch_size=2)
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    assert batches[0]["index"].tolist() == [0, 1] and batches[0]["labels"].tolist() == [0, 1]
    expected = wordpiece.encode(cased, texts[:2], max_length=5)
    for key in expected:
        assert torch.equal(batches[0][key], expected[key]), key
    assert batches[1]["input_ids"].tolist() == [[2, 10, 12, 14, 3], [2, 12, 3, 0, 0]]
    assert "labels" not in next(iter(batching.Loader(texts, None, cased, 5, 2)))
    assert loader.padding_fraction() == pytest.approx(1 - 15 / 18)  # lengths 3, 4 | 5, 3


def test_loader_shuffled_resume(cased):
    texts = [" ".join(["Hello"] * (i % 9 + 1)) for i in range(50)]
    loader = batching.Loader(texts, [i % 2 for i in range(50)], cased, 16, 4, shuffle=True, seed=9)
    full = [b["index"].tolist() for b in loader]
    assert sorted(sum(full, [])) == list(range(50))
    loader.load_state_dict({"seed": 9, "epoch": 0, "batches_done": 6})
    assert [b["index"].tolist() for b in loader] == full[6:]


def test_loader_multilabel_and_pos_weights(cased):
    texts = ["Hello", "Hello World", "World", "Hello World !", "!"]
    labels = [[1, 0], [0, -1], [-1, 1], [1, 0], [1, 0]]
    loader = batching.Loader(texts, labels, cased, max_length=5, batch_size=2)
    batches = list(loader)
    assert batches[0]["labels"].shape == (2, 2) and batches[0]["labels"].dtype == torch.long
    assert torch.cat([b["labels"] for b in batches]).tolist() == labels
    assert batching.Loader(texts, [0, 1, 1, 0, 1], cased, 5, 2).collate([2, 0])["labels"].tolist() == [1, 0]
    # toxic: annotated by texts 0 1 3 4, yes 3 no 1; hate: by 0 2 3 4, yes 1 no 3.
    weights = batching.pos_weights(labels)
    assert weights.tolist() == pytest.approx([1 / 3, 3.0]) and weights.dtype == torch.float32
    with pytest.raises(files.DataError) as e:
        batching.pos_weights([[1, 0], [0, 0], [-1, 0]])
    one_line_error(e, "[1]", "positive")
    with pytest.raises(files.DataError):
        batching.pos_weights([0, 1])
