"""
BERT for sequence classification, written out from the paper (Devlin et al. 2019).

This is the model as the paper writes it, and the specification of what nanobert computes:
plain nn.Embedding / nn.Linear / nn.LayerNorm / nn.Dropout calls in fp32, one module per box
of the paper's figure. fast.py computes the same function faster (bf16, fused kernels); it is
swapped in by precision.prepare and tested equal to this file, which knows nothing of it.

Module and parameter names follow the Hugging Face BERT names
(`bert.encoder.layer.0.attention.self.query`), so that state dicts map one to one in both
directions; loading and saving that layout is pretrained.py's.

Two heads sit on the encoder: the classifier (BertForSequenceClassification, what nanobert
trains) and BERT's own pretraining task, masked-language modelling (BertForMaskedLM: mlm.py
continues the pretraining on a task's texts before the classifier is fine-tuned).

This file imports nothing from the project.
"""

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# Config


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    classifier_dropout: float | None = None  # None: use hidden_dropout_prob, as BERT does
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    # None or "single_label_classification": one class per text (softmax over the logits);
    # "multi_label_classification": a yes/no question per label (a sigmoid per logit), as in transformers.
    problem_type: str | None = None

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def multilabel(self) -> bool:
        return self.problem_type == "multi_label_classification"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} is not a size; expected a whole number of at least 1")
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type {self.problem_type!r} is not supported; expected one of {PROBLEM_TYPES}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ValueError(f"id2label keys must be 0..n-1, got {sorted(self.id2label)}")

    @classmethod
    def from_json(cls, path) -> "BertConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no config.json; expected a Hugging Face BERT folder") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(raw)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def from_dict(cls, raw: dict) -> "BertConfig":
        # Refuse the variants this implementation does not compute, rather than
        # silently running a different model than the checkpoint was trained as.
        model_type = raw.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"model_type {model_type!r} is not supported; expected 'bert'")
        pos = raw.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ValueError(f"position_embedding_type {pos!r} is not supported; expected 'absolute'")
        if raw.get("is_decoder") or raw.get("add_cross_attention"):
            raise ValueError("decoder / cross-attention BERT is not supported; expected an encoder")
        if "quantization_config" in raw:
            method = raw["quantization_config"].get("quant_method") if isinstance(raw["quantization_config"], dict) else None
            raise ValueError(f"quantization_config: a quantised model ({method!r}); expected fp32 weights "
                             "(an int8 model of quantize.py loads with eval.load_run)")
        known = {f.name: f.type for f in fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in known}
        for k, v in kwargs.items():
            # A config written by hand can hold "big" where a number belongs: say which field, here,
            # rather than fail somewhere inside nn.Linear.
            expected = CONFIG_TYPES.get(k)
            if expected and not (isinstance(v, expected) and not isinstance(v, bool)) and not (v is None and k in ("classifier_dropout", "problem_type")):
                raise ValueError(f"field {k!r} is {v!r}; expected {CONFIG_TYPE_NAMES[expected]}")
        if not isinstance(kwargs.get("id2label", {}), dict):
            raise ValueError(f"field 'id2label' is {kwargs['id2label']!r}; expected an object of id -> label name")
        if "id2label" not in raw and "num_labels" in raw:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(raw["num_labels"])}
        return cls(**kwargs)

    def to_dict(self, architecture: str = "BertForSequenceClassification") -> dict:
        # Written so that the reference library reads it back as a BERT classifier (or masked-LM model).
        d = asdict(self)
        if d["problem_type"] is None:  # as the reference library leaves it out when unset
            del d["problem_type"]
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        d["label2id"] = {v: k for k, v in self.id2label.items()}
        d.update(model_type="bert", architectures=[architecture],
                 position_embedding_type="absolute")
        return d


PROBLEM_TYPES = (None, "single_label_classification", "multi_label_classification")

# The type each config field must have in config.json (ints are accepted where floats are).
CONFIG_TYPES = {"vocab_size": int, "hidden_size": int, "num_hidden_layers": int, "num_attention_heads": int,
                "intermediate_size": int, "hidden_act": str, "hidden_dropout_prob": (int, float),
                "attention_probs_dropout_prob": (int, float), "max_position_embeddings": int, "type_vocab_size": int,
                "layer_norm_eps": (int, float), "initializer_range": (int, float), "pad_token_id": int,
                "classifier_dropout": (int, float), "problem_type": str}
CONFIG_TYPE_NAMES = {int: "a whole number", str: "a string", (int, float): "a number"}

# -----------------------------------------------------------------------------
# The model


def gelu_new(x):
    # The tanh approximation used by the original TF BERT code and GPT-2.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {"gelu": F.gelu, "gelu_new": gelu_new, "relu": F.relu}


class BertEmbeddings(nn.Module):
    """A token's vector: its word's, plus its position's, plus its segment's (sentence A or B)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, inputs_embeds=None):
        """input_ids (B, T), or inputs_embeds (B, T, H) in place of the word-embedding lookup (the
        positions and segments are added all the same); token_type_ids (B, T), None: all sentence A."""
        words = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, H)
        B, T, _ = words.shape
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings {self.position_embeddings.num_embeddings}")
        if token_type_ids is None:
            token_type_ids = torch.zeros(B, T, dtype=torch.long, device=words.device)
        positions = self.position_embeddings(torch.arange(T, device=words.device))  # (T, H), the same for every row
        x = words + positions + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))  # (B, T, H)


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017): every token looks at every
    non-padding token of its text, n_head times in parallel, each head in its own head_dim slice."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)  # on the attention probabilities
        # SDPA: torch's fused attention kernels, which need not write the (T, T) scores to memory.
        # False: the same arithmetic written out below, to read (and to check the kernel against).
        self.flash = True

    def forward(self, x, mask=None):
        """x (B, T, H); mask (B, 1, 1, T), True where a key may be looked at, or None: every key."""
        B, T, H = x.shape
        # (B, T, H) -> (B, n_head, T, head_dim): each head its own slice of the projections.
        q, k, v = (m(x).view(B, T, self.n_head, H // self.n_head).transpose(1, 2) for m in (self.query, self.key, self.value))
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, n_head, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))  # padding keys: weight 0
            y = self.dropout(F.softmax(scores, dim=-1)) @ v  # (B, n_head, T, head_dim)
        return y.transpose(1, 2).reshape(B, T, H)  # the heads side by side again: (B, T, H)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, y, x):
        # BERT is post-LN: the residual is added before the LayerNorm, not inside it.
        return self.LayerNorm(x + self.dropout(self.dense(y)))  # (B, T, H)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, mask=None):
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))  # (B, T, intermediate)


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h, x):
        return self.LayerNorm(x + self.dropout(self.dense(h)))  # (B, T, H)


class BertLayer(nn.Module):
    """One transformer block: attention, then the position-wise feed-forward network, each with
    its residual connection and LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, mask=None):
        a = self.attention(x, mask)  # (B, T, H)
        return self.output(self.intermediate(a), a)  # (B, T, H)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x, mask=None):
        """[x, the first layer's output, ..., the last layer's output]: num_hidden_layers + 1 tensors (B, T, H)."""
        hidden_states = [x]
        for layer in self.layer:
            hidden_states.append(layer(hidden_states[-1], mask))
        return hidden_states


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))  # the [CLS] position: (B, T, H) -> (B, H)


class BertModel(nn.Module):
    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        """Returns (pooled (B, H) or None without a pooler, hidden_states): the embedding output and every layer's output, each (B, T, H).
        input_ids (B, T) or inputs_embeds (B, T, H); attention_mask (B, T): 1 for a token, 0 for padding."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("expected input_ids (B, T) or inputs_embeds (B, T, H), one of them")
        # A boolean (B, 1, 1, T) mask: every query may look at every non-padding key.
        # Without padding we pass no mask at all, which lets SDPA pick its fastest kernel.
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask[:, None, None, :].bool()
        hidden_states = self.encoder(self.embeddings(input_ids, token_type_ids, inputs_embeds), mask)
        return (self.pooler(hidden_states[-1]) if self.pooler is not None else None), hidden_states


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor  # (B, num_labels)
    pooled: torch.Tensor  # (B, H)
    hidden_states: list  # num_hidden_layers + 1 tensors of (B, T, H); [0] is the embedding output


class BertForSequenceClassification(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        p = config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        init_weights(module, self.config.initializer_range)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None) -> ClassifierOutput:
        pooled, hidden_states = self.bert(input_ids, attention_mask, token_type_ids, inputs_embeds)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        return ClassifierOutput(logits, pooled, hidden_states)


# -----------------------------------------------------------------------------
# BERT's pretraining head: masked-language modelling


class BertPredictionHeadTransform(nn.Module):
    """One more dense layer, activation and LayerNorm on each position's vector before the words are scored."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))  # (..., H)


class BertLMPredictionHead(nn.Module):
    """A score for every word of the vocabulary at a position: the transformed vector's dot product
    with each word's input embedding, plus a bias of the word's own. The decoder's weight IS the
    word-embedding matrix (BertForMaskedLM ties the two: one parameter, as in BERT), so the head
    adds only H*H + 4H + vocab parameters of its own."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)  # tied to the word embeddings
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x):
        return self.decoder(self.transform(x)) + self.bias  # (..., H) -> (..., vocab)


class MaskedLMOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab), or (N, vocab) at the N positions asked for
    hidden_states: list  # num_hidden_layers + 1 tensors of (B, T, H)


class BertForMaskedLM(nn.Module):
    """The encoder with BERT's masked-language-model head: a word's score at every position, trained to
    name the words that were masked out (mlm.py). Parameter names as the reference's BertForMaskedLM
    (`cls.predictions.transform.dense.weight`, `cls.predictions.bias`), so its checkpoints load here.

    pooler: the reference's masked-LM model has none (MLM does not use it). Where the checkpoint has
    one, pretrained.from_pretrained keeps it here, frozen and untouched, so that a classifier
    fine-tuned after the pretraining starts from it as it would have from the checkpoint."""

    # A parameter known by two names: the decoder's weight is the word embeddings' (saved once, under that name).
    tied_weights = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def __init__(self, config: BertConfig, pooler: bool = False):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=pooler)
        self.cls = nn.ModuleDict({"predictions": BertLMPredictionHead(config)})  # the reference's name for its pretraining heads
        self.apply(lambda m: init_weights(m, config.initializer_range))
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied after the init
        if pooler:
            self.bert.pooler.requires_grad_(False)  # carried, never trained: no gradient reaches it

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                positions=None) -> MaskedLMOutput:
        """positions (B, T) bool, or None: every position. With it, only the N positions that are True
        are scored, as BERT's own code scores only the masked ones: over a vocabulary of 30,522 words
        the decoder costs, at a position, about half what bge-small-en's 12 layers cost."""
        _, hidden_states = self.bert(input_ids, attention_mask, token_type_ids, inputs_embeds)
        x = hidden_states[-1]  # (B, T, H)
        if positions is not None:
            x = x[positions]  # (N, H)
        # The head in fp32, the precision of its weights, whatever the encoder computed in.
        return MaskedLMOutput(self.cls.predictions(x.float()), hidden_states)


def init_weights(module: nn.Module, std: float):
    """BERT's initialisation: N(0, std = 0.02) for weights, zero biases, identity LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)
