"""Batches: pre-tokenized once, bucketed by length so little compute goes to padding; and the class
weights of an imbalanced dataset.

BucketBatchSampler decides which texts meet in a batch (deterministic, resumable, shardable);
Loader turns those indices into the tensors of a batch; class_weights and pos_weights weigh the
rare class (or a label's rare answer) as much as the common one in the loss.

This module imports nothing from the rest of nanobert but the file plumbing (files.py) and the
tokenizer (wordpiece.py).
"""

import numpy as np
import torch

from files import DataError
from wordpiece import pad, tensors, token_ids

WIDTH_STEP = 16  # few_shapes: a batch's width is a multiple of this many tokens


class BucketBatchSampler:
    """Batches of indices, similar lengths together; deterministic from (seed, epoch), resumable, shardable.

    shuffle=True: shuffle, sort by length within chunks of `bucket_batches` batches, cut into batches,
    shuffle the batches. A batch then holds texts of similar length (little padding), yet which texts
    meet and the order of batches still change every epoch. shuffle=False: batches in dataset order;
    with by_length, sorted by length instead, longest first: for inference, where the least padding
    is all that matters (the index of each row puts the predictions back in order). Labelling 5,000
    tweets 64 at a time in file order, 45% of the token positions are padding; sorted, 1% (sorted
    within windows of 1,024 tweets, 5%; of 4,096, 2%). There max_tokens (if given) also bounds a
    batch's token positions, rows x its longest: the batches of long texts take fewer rows, so a
    batch's memory is that of max_tokens tokens whatever the lengths (the products keep their
    rows: 64 texts of 64 tokens are as many rows as 128 of 32).

    few_shapes (with by_length): every batch has a power of two rows and is as wide as a multiple of
    WIDTH_STEP tokens (Loader pads it so), so that a long labelling job meets a few dozen shapes of
    batch, not thousands. It matters for memory: oneDNN, which computes the products on the CPU,
    makes kernels for each shape it meets and keeps up to 1,024 of them (its primitive cache). A
    6-layer model fed 1,544 distinct shapes peaked at 1,862 MiB; fed 27, at 409 MiB
    (experiments/batch_shapes.py).

    With num_replicas > 1 (distributed training) batch_size is the global batch: every rank computes
    the same global batches and takes its share of each, rows rank, rank + num_replicas, ... So one
    optimizer step sees the same examples however many processes share the work. A last global
    batch smaller than num_replicas is left out, so that every rank has a part of every batch.

    A full pass moves on to the next epoch by itself. To resume, load_state_dict() and iterate:
    the batches already done in that epoch are skipped (do not call set_epoch, which restarts it).
    """

    def __init__(self, lengths, batch_size, *, shuffle=True, seed=0, bucket_batches=50, drop_last=False,
                 num_replicas=1, rank=0, by_length=False, max_tokens=None, few_shapes=False):
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError(f"batch_size={batch_size}, bucket_batches={bucket_batches}: expected both >= 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank}, num_replicas={num_replicas}: expected 0 <= rank < num_replicas")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.bucket_batches, self.drop_last = bucket_batches, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.by_length = by_length and not shuffle
        self.max_tokens = max_tokens if self.by_length else None
        self.few_shapes = few_shapes and self.by_length
        self.epoch, self.batches_done = 0, 0

    def set_epoch(self, epoch):
        self.epoch, self.batches_done = epoch, 0

    def global_batches(self, epoch=None):
        """All batches of an epoch, for all ranks, in order."""
        n, size = len(self.lengths), self.batch_size
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
            order, chunk, batches = rng.permutation(n), size * self.bucket_batches, []
            for start in range(0, n, chunk):
                piece = order[start : start + chunk]
                piece = piece[np.argsort(self.lengths[piece], kind="stable")]
                batches += [piece[i : i + size] for i in range(0, len(piece), size)]
            batches = [batches[i] for i in rng.permutation(len(batches))]
        elif self.by_length:
            order = np.argsort(-self.lengths, kind="stable")  # longest first: the peak memory is met at once
            batches, start = [], 0
            while start < n:
                longest = max(1, int(self.lengths[order[start]]))  # the batch's first row is its longest
                if self.few_shapes:
                    longest = -(-longest // WIDTH_STEP) * WIDTH_STEP  # the width the batch will have
                rows = size if self.max_tokens is None else max(1, min(size, self.max_tokens // longest))
                if self.few_shapes:  # the largest power of two that fits, and no more rows than are left
                    rows = 1 << (min(rows, n - start).bit_length() - 1)
                batches.append(order[start : start + rows])
                start += rows
        else:
            batches = [np.arange(i, min(i + size, n)) for i in range(0, n, size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == size]
        return [b for b in batches if len(b) >= self.num_replicas]

    def __len__(self):
        if self.max_tokens is not None:
            return len(self.global_batches())
        n, size = len(self.lengths), self.batch_size
        full, rest = divmod(n, size)
        return full + (0 < rest and not self.drop_last and rest >= self.num_replicas)

    def __iter__(self):
        # Counting the batches handed out is what makes a mid-epoch resume possible: a restored
        # sampler recomputes the same order and skips what was done.
        batches = self.global_batches()
        for i in range(self.batches_done, len(batches)):
            self.batches_done = i + 1
            yield batches[i][self.rank :: self.num_replicas].tolist()
        self.epoch, self.batches_done = self.epoch + 1, 0  # the next pass is the next epoch

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state):
        self.seed, self.epoch, self.batches_done = state["seed"], state["epoch"], state["batches_done"]


def padding_fraction(lengths, batches):
    """Share of the token positions in padded batches that are padding."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    total = sum(int(lengths[b].max()) * len(b) for b in batches if len(b))
    return 1 - real / total if total else 0.0


def class_weights(labels, num_classes=None):
    """Inverse-frequency class weights normalised so that the weighted count equals the plain count."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes or 0)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()
        raise DataError(f"class(es) {empty} have no examples; expected every class at least once for inverse frequency")
    return torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


def pos_weights(labels):
    """Per label of a multi-label dataset, negatives / positives among the texts that annotate it (-1 does not).

    The pos_weight of a binary cross-entropy: a label's positives then weigh as much as its negatives.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 2:
        raise DataError(f"labels of shape {labels.shape}: expected (texts, labels), one 0/1/-1 list per text")
    positives, negatives = (labels == 1).sum(axis=0), (labels == 0).sum(axis=0)
    if (positives == 0).any() or (negatives == 0).any():
        empty = np.flatnonzero((positives == 0) | (negatives == 0)).tolist()
        raise DataError(f"label(s) {empty} lack positive or negative examples; expected both for negatives/positives")
    return torch.tensor(negatives / positives, dtype=torch.float32)


class Loader:
    """Batches of tensors from texts: tokenized once up front, then padded per batch.

    Yields dicts with input_ids, attention_mask, token_type_ids (B, T), labels if labels were given
    ((B,) of class ids, or (B, L) of 1/0/-1 for multi-label lists), and index (B,): each row's
    position in `texts`, to put predictions back in order.
    """

    def __init__(self, texts, labels, tokenizer, max_length, batch_size, *, shuffle=False, seed=0,
                 bucket_batches=50, drop_last=False, num_replicas=1, rank=0, by_length=False, max_tokens=None,
                 few_shapes=False):
        ids = token_ids(tokenizer, texts, max_length)  # once: bucketing needs the lengths anyway
        self.ids, self.lengths = pad(ids, tokenizer)
        # One tensor either way: a list of ints is (N,), a list of [toxic, hate] pairs is (N, 2).
        self.labels = None if labels is None else torch.tensor(labels, dtype=torch.long)
        if self.labels is not None and len(self.labels) != len(ids):
            raise ValueError(f"{len(ids)} texts but {len(self.labels)} labels; expected one label per text")
        self.sampler = BucketBatchSampler(self.lengths, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                                          bucket_batches=bucket_batches, num_replicas=num_replicas, rank=rank,
                                          by_length=by_length, max_tokens=max_tokens, few_shapes=few_shapes)
        self.multiple = WIDTH_STEP if self.sampler.few_shapes else 1
        if self.multiple > 1:  # room for the widest batch's rounded-up width
            extra = -self.ids.shape[1] % self.multiple
            self.ids = np.pad(self.ids, ((0, 0), (0, extra)), constant_values=tokenizer.token_to_id("[PAD]"))

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        for indices in self.sampler:
            yield self.collate(indices)

    def collate(self, indices):
        batch = tensors(self.ids[indices], self.lengths[indices], self.multiple)
        batch["index"] = torch.tensor(indices, dtype=torch.long)
        if self.labels is not None:
            batch["labels"] = self.labels[batch["index"]]
        return batch

    def padding_fraction(self, epoch=None):
        return padding_fraction(self.lengths, self.sampler.global_batches(epoch))

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)
