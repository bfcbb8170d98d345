"""Tests for mlm.py: BERT's masking (how many tokens, 80/10/10, never a special token, labels, the
generator), the loss (the same as over every position), and a tiny model that learns from it. The
head itself: tests/test_model.py (parity) and tests/test_pretrained.py (loading, saving); the
`train.py pretrain` run: tests/test_train.py."""

import random

import torch
import torch.nn.functional as F
from conftest import NEUTRAL, TINY

import mlm
import pretrained
import wordpiece

TOKENIZER = wordpiece.load_tokenizer(TINY)
VOCAB = mlm.vocabulary(TOKENIZER)


def texts(n, seed=0):
    """n texts of 4 to 19 common words each (repeats allowed)."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(NEUTRAL, k=rng.randint(4, 19))) for _ in range(n)]


def batch(n=400, seed=0):
    return wordpiece.encode(TOKENIZER, texts(n, seed), max_length=32)


def test_vocabulary_of_the_tokenizer():
    assert VOCAB.mask_id == 4 and set(VOCAB.special_ids) == {0, 1, 2, 3, 4} and VOCAB.size == 909


def test_each_text_predicts_round_15_percent_of_its_ordinary_tokens():
    ids = batch()["input_ids"]
    inputs, labels = mlm.mask_tokens(ids, VOCAB, 0.15, torch.Generator().manual_seed(0))
    special = torch.isin(ids, torch.tensor(VOCAB.special_ids))
    n = (~special).sum(1)
    assert torch.equal((labels != -100).sum(1), (n * 0.15).round().clamp(min=1).long())  # per text, as BERT's code
    assert (labels != -100).sum(1).min() >= 1  # a short text still predicts one
    # Labels: the original token where chosen, -100 everywhere else; inputs change only where chosen.
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen]) and (labels[~chosen] == -100).all()
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_special_tokens_and_padding_are_never_chosen():
    b = batch()
    ids = b["input_ids"]
    for seed in range(5):
        _, labels = mlm.mask_tokens(ids, VOCAB, 0.5, torch.Generator().manual_seed(seed))
        chosen = labels != -100
        assert not chosen[b["attention_mask"] == 0].any()  # padding
        assert not chosen[:, 0].any() and not chosen[torch.isin(ids, torch.tensor(VOCAB.special_ids))].any()
    assert (b["attention_mask"] == 0).any()  # the batch is padded: the check above checks something


def test_eighty_ten_ten():
    ids = batch(2000)["input_ids"]
    inputs, labels = mlm.mask_tokens(ids, VOCAB, 0.15, torch.Generator().manual_seed(1))
    chosen = labels != -100
    n = int(chosen.sum())
    masked = (inputs[chosen] == VOCAB.mask_id).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n  # unchanged, or a random draw of the same token (1 in 909)
    other = 1 - masked - kept
    assert n > 3000
    # Binomial standard errors at n > 3000 are under 0.008 (80%) and 0.006 (10%): within 4 of them.
    assert abs(masked - 0.8) < 0.03 and abs(kept - 0.1) < 0.025 and abs(other - 0.1) < 0.025
    # The random tokens are spread over the vocabulary, not one id.
    replaced = inputs[chosen & (inputs != ids) & (inputs != VOCAB.mask_id)]
    assert replaced.unique().numel() > 200 and replaced.max() < VOCAB.size


def test_a_generator_makes_the_masks_and_its_seed_decides_them():
    ids = batch()["input_ids"]
    a = mlm.mask_tokens(ids, VOCAB, 0.15, mlm.batch_generator(0, 1, 7))
    b = mlm.mask_tokens(ids, VOCAB, 0.15, mlm.batch_generator(0, 1, 7))
    c = mlm.mask_tokens(ids, VOCAB, 0.15, mlm.batch_generator(0, 1, 8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    seeds = {mlm.batch_generator(s, e, i).initial_seed() for s in range(3) for e in range(5) for i in range(1000)}
    assert len(seeds) == 3 * 5 * 1000  # a batch of a run never shares another's masks


def test_mask_rate_sets_how_many():
    ids = batch()["input_ids"]
    few = (mlm.mask_tokens(ids, VOCAB, 0.15, torch.Generator().manual_seed(0))[1] != -100).sum()
    many = (mlm.mask_tokens(ids, VOCAB, 0.4, torch.Generator().manual_seed(0))[1] != -100).sum()
    n = (~torch.isin(ids, torch.tensor(VOCAB.special_ids))).sum()
    assert abs(few / n - 0.15) < 0.02 and abs(many / n - 0.4) < 0.02


def test_the_loss_at_the_chosen_positions_is_the_loss_over_every_position_ignoring_the_rest():
    net = pretrained.from_pretrained(TINY, masked_lm=True, verbose=False).eval()
    b = mlm.mask_batch(batch(16), VOCAB, 0.15, torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = mlm.mlm_loss(net, b)
        every = net(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits  # (B, T, vocab)
    want = F.cross_entropy(every.flatten(0, 1), b["labels"].flatten(), ignore_index=-100)
    assert abs(loss.item() - want.item()) < 1e-5 and loss.item() > 1.0


def test_a_tiny_model_learns_to_fill_in_the_words():
    torch.manual_seed(0)
    net = pretrained.from_pretrained(TINY, masked_lm=True, verbose=False).train()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    b = batch(64)
    losses = []
    for step in range(30):
        loss = mlm.mlm_loss(net, mlm.mask_batch(b, VOCAB, 0.15, mlm.batch_generator(0, 0, step)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.0, losses  # from ~ln(909) = 6.8 towards the 60 words the texts use (ln 60 = 4.1)
    # The pooler is carried, not trained; the head and the encoder are.
    fresh = pretrained.from_pretrained(TINY, masked_lm=True, verbose=False)
    assert torch.equal(net.bert.pooler.dense.weight, fresh.bert.pooler.dense.weight)
    assert not torch.equal(net.cls.predictions.transform.dense.weight, fresh.cls.predictions.transform.dense.weight)
