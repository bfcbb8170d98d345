"""
Masked-language modelling, BERT's pretraining task, continued on a task's own texts before the
classifier is fine-tuned ("Don't Stop Pretraining", Gururangan et al. 2020: task-adaptive
pretraining). The encoder has read books and Wikipedia; a few passes of the same task over the
tweets and forum posts it will classify teach it their spelling, slang and topics, without labels.

The task (Devlin et al. 2019, section 3.1, and their create_pretraining_data.py): in each text,

    k = round(rate * n) of its n ordinary tokens are chosen (rate 0.15; at least one), uniformly;
    of the chosen ones 80% become [MASK], 10% a random token of the vocabulary, 10% stay as they are;
    the model predicts the original token at each chosen position, and nowhere else:
    labels (B, T) hold that token there, -100 elsewhere, and the loss is the mean cross-entropy
    over the chosen positions: - 1/N sum_i log p(x_i | the masked text).

Special tokens ([CLS], [SEP], [PAD], and [UNK] or [MASK] where a text has them) are never chosen.
Why not always [MASK]: fine-tuning never shows the model a [MASK], and a token that may be a random
one, or the right one left in place, makes it keep a good vector for every token it sees, not only
for the masked ones. The masks are drawn anew for every batch (dynamic masking, as RoBERTa does),
from a generator seeded by (seed, epoch, batch) alone: the same run masks the same way, and a run
resumed mid-epoch masks as the interrupted one would have.

The model is model.BertForMaskedLM; the loop is train.py's own (`train.py pretrain`): the same
optimizer, schedule, clipping, checkpoints and --resume as every other run, with this objective.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

import wordpiece

RATE, MASK_SHARE, RANDOM_SHARE = 0.15, 0.8, 0.1  # BERT's: 15% of the tokens, 80% [MASK], 10% random, 10% kept


class Vocabulary(NamedTuple):
    """What the masking needs to know of the tokenizer."""

    mask_id: int  # [MASK]
    special_ids: tuple  # never chosen
    size: int  # random tokens are drawn from ids 0..size-1


def vocabulary(tokenizer) -> Vocabulary:
    specials = tuple(tokenizer.token_to_id(t) for t in wordpiece.SPECIAL_TOKENS)
    return Vocabulary(tokenizer.token_to_id("[MASK]"), specials, max(tokenizer.get_vocab().values()) + 1)


def mask_tokens(input_ids, vocab: Vocabulary, rate=RATE, generator=None):
    """(inputs, labels), both (B, T): input_ids with BERT's masking applied, and the original token at
    each chosen position (-100 elsewhere). input_ids (B, T) on the CPU, padded with [PAD]."""
    special = torch.isin(input_ids, torch.tensor(vocab.special_ids))  # (B, T)
    n = (~special).sum(1)  # (B,) the ordinary tokens of each text
    k = (n * rate).round().clamp(min=1)  # (B,) how many of them to predict
    # k positions of each text, uniformly among its ordinary ones: those of its k smallest random scores.
    scores = torch.rand(input_ids.shape, generator=generator).masked_fill(special, 2.0)  # specials last
    rank = scores.argsort(1).argsort(1)  # (B, T) each position's place in its text's order
    chosen = (rank < k[:, None]) & ~special  # (B, T)
    labels = input_ids.masked_fill(~chosen, -100)
    # One draw per position decides what a chosen one becomes: [MASK], a random token, or itself.
    r = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.masked_fill(chosen & (r < MASK_SHARE), vocab.mask_id)
    to_random = chosen & (r >= MASK_SHARE) & (r < MASK_SHARE + RANDOM_SHARE)
    inputs[to_random] = torch.randint(vocab.size, (int(to_random.sum()),), generator=generator)
    return inputs, labels


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The generator of one batch's masks: a function of (seed, epoch, batch) alone, distinct for each
    batch of a run, the same in every process and after a resume."""
    return torch.Generator().manual_seed(seed * 1_000_000_007 + epoch * 1_000_003 + batch)


def mask_batch(batch: dict, vocab: Vocabulary, rate, generator) -> dict:
    """A Loader's batch (CPU tensors) for masked-LM training: input_ids masked, labels (B, T) the tokens to predict."""
    inputs, labels = mask_tokens(batch["input_ids"], vocab, rate, generator)
    return {**batch, "input_ids": inputs, "labels": labels}


def mlm_loss(net, batch):
    """The mean cross-entropy of the predictions at the chosen positions (labels != -100): the model
    scores those positions alone (BertForMaskedLM's positions), which is the same loss as scoring every
    position and ignoring the others."""
    labels = batch["labels"]  # (B, T)
    chosen = labels != -100  # (B, T)
    logits = net(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], positions=chosen).logits  # (N, vocab)
    return F.cross_entropy(logits, labels[chosen])
