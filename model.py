"""
BERT for sequence classification, written out from the paper (Devlin et al. 2019).

Module and parameter names follow the Hugging Face BERT names
(`bert.encoder.layer.0.attention.self.query`), so that state dicts map one to one in both
directions; loading and saving that layout is pretrained.py's.

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

    def to_dict(self) -> dict:
        # Written so that the reference library reads it back as a BERT classifier.
        d = asdict(self)
        if d["problem_type"] is None:  # as the reference library leaves it out when unset
            del d["problem_type"]
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        d["label2id"] = {v: k for k, v in self.id2label.items()}
        d.update(model_type="bert", architectures=["BertForSequenceClassification"],
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
# Arithmetic precision: fp32 weights, the arithmetic in the activations' dtype
#
# The parameters stay fp32 (they are the optimizer's master weights, and what checkpoints hold).
# The embedding output is cast once to the model's compute_dtype (bf16 where precision.py says
# so); from there every matrix product, softmax, GELU and LayerNorm runs in that dtype, and the
# weights are cast to it where they are used. torch.autocast does less well here: the embeddings'
# LayerNorm gives fp32 and bf16 + fp32 adds to fp32, so its residual stream stays fp32, every
# linear layer casts its input again, and SDPA's training fallback upcasts q, k, v to fp32.


def compute_copy(owner: nn.Module, name: str, tensors: list, dtype: torch.dtype):
    """
    The frozen `tensors` concatenated (dim 0) and in `dtype`: the copy the arithmetic uses.
    Frozen weights (LoRA's base model, a distillation teacher, a model prepared for inference)
    keep their copy on `owner` between calls. It is made again when a weight is changed in place
    (its version counter moves: load_state_dict, LoRA merge) or replaced. Trained weights never
    come here: the fused AdamW updates them without moving their version counter.
    """
    if len(tensors) == 1 and tensors[0].dtype == dtype:
        return tensors[0]
    key = (dtype, tuple((id(t), t.data_ptr(), t._version) for t in tensors))
    cache = owner.__dict__.setdefault("_compute_copies", {})
    if name not in cache or cache[name][0] != key:
        with torch.inference_mode(False):  # a plain tensor, usable by a later training forward
            cache[name] = (key, torch.cat(tensors).detach().to(dtype))
    return cache[name][1]


def matmul_bias(x, w, b, act=None, add=None):
    """
    act(x w^T + b), or add + x w^T + b, where no gradient is to flow through it. For bf16 on the
    CPU: oneDNN's inner product with the bias and the activation or the residual add fused in
    (the kernels torch.compile emits). F.linear (addmm) first copies the bias into every row of
    the output: 5-25% slower at these shapes, and the activation or the add cost a pass each.
    """
    if (x.dtype == torch.bfloat16 and x.device.type == "cpu" and HAS_LINEAR_POINTWISE and act in ONEDNN_ACTIVATIONS
            and not torch.compiler.is_compiling()):  # torch.compile makes these itself
        if add is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, w, b, "add")
        return torch.ops.mkldnn._linear_pointwise(x, w, b, *ONEDNN_ACTIVATIONS[act])
    return finish(F.linear(x, w, b), act, add)


def finish(y, act=None, add=None):
    """act(y), or add + y (never both)."""
    return act(y) if act is not None else y if add is None else add + y


HAS_LINEAR_POINTWISE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
ONEDNN_ACTIVATIONS = {None: ("none", [], ""), F.gelu: ("gelu", [], "none"), F.relu: ("relu", [], "")}  # "none": erf GELU


class MixedLinear(torch.autograd.Function):
    """
    y = x W^T + b with x in bf16 and the trained weight W and bias b in fp32: the cast of W is
    made once per call (each weight is used once per step) and the gradients come back in fp32.
    The weight gradient g^T x is computed with the smaller operand transposed into a contiguous
    copy first: oneDNN's bf16 GEMM runs up to 1.5x slower with a transposed left operand.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        w = weight.to(x.dtype)
        ctx.save_for_backward(x, w)
        ctx.weight_dtype = weight.dtype
        return matmul_bias(x, w, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g2, x2 = g.reshape(-1, g.size(-1)), x.reshape(-1, x.size(-1))  # (N, out), (N, in)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = (g2 @ w).view(x.shape)
        if ctx.needs_input_grad[1]:
            if g2.size(1) < x2.size(1):
                dw = (g2.t().contiguous() @ x2).to(ctx.weight_dtype)  # (out, in)
            elif g2.size(1) > x2.size(1):  # (in, out), transposed into the fp32 gradient by the cast itself
                dw = torch.empty(w.shape, dtype=ctx.weight_dtype, device=w.device).copy_((x2.t().contiguous() @ g2).t())
            else:  # square: the copy would cost what it saves
                dw = (g2.t() @ x2).to(ctx.weight_dtype)
        if ctx.needs_input_grad[2]:
            db = g2.sum(0).to(ctx.weight_dtype)  # (sum(0, dtype=float32) would first cast all of g)
        return dx, dw, db


def affine(owner: nn.Module, name: str, x, weights: list, biases: list, act=None, add=None):
    """act(x W^T + b), or add + x W^T + b, in x's dtype, for W and b the concatenation (dim 0) of
    `weights` and `biases`."""
    tensors = weights + [b for b in biases if b is not None]
    if not any(t.requires_grad for t in tensors):
        w = compute_copy(owner, name + ".weight", weights, x.dtype)
        b = None if biases[0] is None else compute_copy(owner, name + ".bias", biases, x.dtype)
        if torch.is_grad_enabled() and x.requires_grad:
            return finish(F.linear(x, w, b), act, add)  # e.g. LoRA's frozen base: the gradient flows on to x
        return matmul_bias(x, w, b, act, add)
    w = weights[0] if len(weights) == 1 else torch.cat(weights)
    b = biases[0] if len(biases) == 1 else torch.cat(biases)
    return finish(F.linear(x, w, b) if w.dtype == x.dtype else MixedLinear.apply(x, w, b), act, add)


def linear(layer: nn.Module, x, act=None, add=None):
    """act(layer(x)), or add + layer(x), in x's dtype, for an nn.Linear or a LoRA layer
    (lora.LoRALinear) over fp32 master weights. Any other layer (an int8 one: its kernels take
    fp32) is given x in fp32."""
    if type(layer) is nn.Linear:
        return affine(layer, "", x, [layer.weight], [layer.bias], act, add)
    if is_adapted(layer):
        y = affine(layer, "", x, [layer.weight], [layer.bias])
        z = low_rank_update(layer, x)
        return finish(y if z is None else y.add_(z, alpha=layer.scaling), act, add)
    return finish(layer(x.float()).to(x.dtype), act, add)


def dropout_residual(x, dropout, dense, h):
    """x + dropout(dense(h)): while training the mask and the add in one kernel (Dropout.residual),
    otherwise the add fused into the matrix product where the kernel exists (matmul_bias)."""
    if dropout.training and dropout.p > 0:
        return dropout.residual(x, linear(dense, h))
    return linear(dense, h, add=x)


def is_adapted(layer: nn.Module) -> bool:
    """A LoRA layer (lora.LoRALinear): a frozen weight and bias, plus scaling * B A dropout(x)."""
    return all(hasattr(layer, a) for a in ("weight", "bias", "lora_A", "lora_B", "lora_dropout", "scaling", "merged"))


def low_rank_update(layer: nn.Module, x):
    """B A dropout(x) of a LoRA layer (to be scaled by layer.scaling), or None: not a LoRA layer,
    or one merged into its weight. The same arithmetic as LoRALinear.forward, computed here so
    that the frozen base weight can join the fused q/k/v product and keep its cast between steps,
    and so that the dropout uses the cheaper mask."""
    if not is_adapted(layer) or layer.merged:
        return None
    drop = layer.lora_dropout
    if isinstance(drop, nn.Dropout) and drop.training and drop.p > 0:
        x = x * dropout_mask(x.shape, drop.p, x.dtype, x.device)  # its own mask per layer, as in peft
    return linear(layer.lora_B, linear(layer.lora_A, x))


def dropout_mask(shape, p: float, dtype, device):
    """
    A tensor of `shape` holding 0 (dropped, with probability p) or 1 / (1 - p) (kept).
    torch's dropout draws a Bernoulli number per element (bernoulli_, ~5 ns each on this CPU:
    about 10% of a fp32 training step, more of a bf16 one). Here one int64 draw of the CPU
    generator gives 64 random bits, i.e. four 16-bit numbers, each compared with p * 2^16 by
    integer ops that vectorise; p is thus rounded to a multiple of 2^-16 (0.1 -> 0.100006).
    Reproducible under torch.manual_seed like any other draw.
    """
    if torch.compiler.is_compiling():  # torch.compile fuses the plain version (and draws with its own generator)
        return (torch.rand(shape, device=device) >= p).to(dtype) / (1 - p)
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None)  # all 64 bits random
    u = bits.view(torch.int16)[:n].view(shape)  # uniform in -32768 .. 32767
    t = -32768 + round(p * 65536)  # u < t: dropped
    if t == -32768:  # p < 2^-17: nothing dropped
        return torch.full(shape, 1 / (1 - p), dtype=dtype, device=device)
    if t > 32767:  # p > 1 - 2^-17: everything dropped
        return torch.zeros(shape, dtype=dtype, device=device)
    keep = u.clamp_(t - 1, t).sub_(t - 1)  # 0 or 1, with no boolean tensor (slow to convert)
    if dtype.itemsize == 2:
        # bf16 / fp16: 0 or 1 times the bit pattern of 1 / (1 - p) in that dtype, read as that dtype.
        scale = torch.tensor(1 / (1 - p), dtype=dtype).view(torch.int16).item()
        return keep.mul_(scale).view(dtype)
    return keep.to(dtype).mul_(1 / (1 - p))


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask (dropout_mask), and the residual add fused with it."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return torch.zeros_like(x)
        return x * dropout_mask(x.shape, self.p, x.dtype, x.device)

    def residual(self, x, h):
        """x + dropout(h), in one kernel while training."""
        if not self.training or self.p == 0:
            return x + h
        if self.p == 1:
            return x.clone()
        return torch.addcmul(x, h, dropout_mask(h.shape, self.p, h.dtype, h.device))


# -----------------------------------------------------------------------------
# The model


def gelu_new(x):
    # The tanh approximation used by the original TF BERT code and GPT-2.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {"gelu": F.gelu, "gelu_new": gelu_new, "relu": F.relu}


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, dtype=None):
        T = input_ids.size(1)
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings {self.position_embeddings.num_embeddings}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        # The one cast of the activations: everything after this runs in `dtype`.
        return self.dropout(self.LayerNorm(x).to(dtype or x.dtype))  # (B, T, H)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def project(self, x):
        """(B, T, H) -> (B, T, 3H): q, k and v side by side."""
        layers = (self.query, self.key, self.value)
        if not all((type(m) is nn.Linear or is_adapted(m)) and m.bias is not None for m in layers):
            return torch.cat([linear(m, x) for m in layers], dim=-1)  # e.g. int8 layers: each on its own
        # One GEMM of width 3H instead of three of width H: the matrix unit stays busy longer per
        # call. The parameters stay three nn.Linear (query, key, value, as on disk and for LoRA);
        # the concatenation is made here, with the cast (kept between calls when frozen).
        qkv = affine(self, "qkv", x, [m.weight for m in layers], [m.bias for m in layers])
        H = x.size(-1)
        for i, m in enumerate(layers):  # LoRA layers: their low-rank terms on top
            z = low_rank_update(m, x)
            if z is not None:
                qkv[..., i * H:(i + 1) * H].add_(z, alpha=m.scaling)
        return qkv

    def forward(self, x, mask):
        B, T, H = x.shape
        qkv = self.project(x)
        if self.training and self.dropout_p > 0:
            y = attention_with_dropout(qkv, mask, self.n_head, self.dropout_p)
        else:
            # No dropout: SDPA's fused kernel, which never writes the (T, T) scores to memory.
            q, k, v = (t.view(B, T, self.n_head, H // self.n_head).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return y.transpose(1, 2).reshape(B, T, H)  # (B, n_head, T, head_dim) -> (B, T, H)


def attention_with_dropout(qkv, mask, n_head, p):
    """
    softmax(q k^T / sqrt(d) + mask) with dropout, times v; qkv (B, T, 3H), the result
    (B, n_head, T, head_dim). SDPA's fused CPU kernels take no dropout, and its fallback computes
    a NaN-safe softmax (isneginf, all, where over the scores) and draws the mask with bernoulli_:
    this is the same arithmetic without those, ~3x faster for fwd + bwd at T = 64.
    """
    B, T, H3 = qkv.shape
    d = H3 // 3 // n_head
    # One copy into (3, B, n_head, T, head_dim): each head's rows contiguous, so that the batched
    # matrix products below read them in place instead of copying q, k and v each on their own.
    q, k, v = qkv.view(B, T, 3, n_head, d).permute(2, 0, 3, 1, 4).contiguous()
    scores = (q * (1.0 / math.sqrt(d))) @ k.transpose(-2, -1)  # (B, n_head, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # padding keys: weight 0
    probs = F.softmax(scores, dim=-1)
    return (probs * dropout_mask(probs.shape, p, probs.dtype, probs.device)) @ v


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, y, x):
        # BERT is post-LN: the residual is added before the LayerNorm, not inside it.
        return self.LayerNorm(dropout_residual(x, self.dropout, self.dense, y))


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return linear(self.dense, x, act=self.act)  # (B, T, intermediate)


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, h, x):
        return self.LayerNorm(dropout_residual(x, self.dropout, self.dense, h))  # (B, T, H)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, mask):
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x):
        # The [CLS] position: (B, T, H) -> (B, H). The head is tiny, so it runs in fp32 whatever
        # the encoder ran in: logits and probabilities keep fp32's precision for free.
        return torch.tanh(linear(self.dense, x[:, 0].float()))


class BertModel(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.compute_dtype = None  # None: the parameters' dtype; torch.bfloat16: see set_compute_dtype

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Returns (pooled (B, H), hidden_states): the embedding output and every layer's output, each (B, T, H)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # A boolean (B, 1, 1, T) mask: every query may look at every non-padding key.
        # Without padding we pass no mask at all, which lets SDPA pick its fastest kernel.
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask[:, None, None, :].bool()
        x = self.embeddings(input_ids, token_type_ids, self.compute_dtype)
        hidden_states = [x]
        for layer in self.encoder.layer:
            x = layer(x, mask)
            hidden_states.append(x)
        return self.pooler(x), hidden_states


def set_compute_dtype(model: nn.Module, dtype: torch.dtype | None):
    """The dtype every BERT inside `model` computes in (None: its parameters' dtype). The
    parameters are left as they are: fp32 master weights, each cast where it is used."""
    for m in model.modules():
        if isinstance(m, BertModel):
            m.compute_dtype = dtype
    return model


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
        self.dropout = Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # BERT's initialisation: N(0, 0.02) for weights, zero biases, identity LayerNorms.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> ClassifierOutput:
        pooled, hidden_states = self.bert(input_ids, attention_mask, token_type_ids)
        logits = linear(self.classifier, self.dropout(pooled))
        return ClassifierOutput(logits, pooled, hidden_states)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)
