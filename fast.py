"""
The fast path: model.py's BERT computed faster, with the same parameters. The one file that knows
both BERT's insides (model.py) and LoRA's (lora.py): it fuses across the two.

model.py is the specification, written as the paper writes it; this file is an optimisation of
it, proven equal by tests/test_fast.py (fp32 within 1e-6, bf16 within bf16's rounding, forward
and gradients, for a teacher, a student and a LoRA model, merged or not). prepare() turns each
module of a model into its fast subclass in place, `module.__class__ = Fast...` (as
torch.nn.utils.parametrize does): the same objects, so the same Parameters, children, names and
state-dict keys; the optimizer, checkpoints, saved models and adapter files cannot tell.
unprepare() turns them back. What changes:

- the arithmetic in bf16 over fp32 master weights (MixedLinear; the activations cast once, after
  the embeddings' LayerNorm), with the classification head (pooler, classifier) in fp32;
- one q/k/v product of width 3H instead of three of width H, LoRA's low-rank terms added to it;
- frozen weights (LoRA's base, a distillation teacher, a model for inference) cast and
  concatenated once and kept (compute_copy), not at every call;
- oneDNN's fused kernels for bf16 inference: the bias, the GELU or the residual add inside the
  matrix product (matmul_bias);
- cheaper dropout masks (dropout_mask), the residual add fused with the mask, and attention with
  dropout written out without SDPA's NaN-safe fallback (attention_with_dropout).

precision.prepare is what calls prepare (precision.choose: `--fast on`, the default); `--fast off`
runs model.py as written, in fp32. An int8 model (quantize.py) is left plain: its kernels are
quantize.py's.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import lora
import model as M

# -----------------------------------------------------------------------------
# Arithmetic precision: fp32 weights, the arithmetic in the activations' dtype
#
# The parameters stay fp32 (they are the optimizer's master weights, and what checkpoints hold).
# The embedding output is cast once to the compute dtype (bf16 where precision.py says so; the
# embeddings' CastingLayerNorm); from there every matrix product, softmax, GELU and LayerNorm
# runs in that dtype, and the weights are cast to it where they are used. torch.autocast does
# less well here: the embeddings' LayerNorm gives fp32 and bf16 + fp32 adds to fp32, so its
# residual stream stays fp32, every linear layer casts its input again, and SDPA's training
# fallback upcasts q, k, v to fp32.


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
    (lora.LoRALinear) over fp32 master weights. Any other layer is given x in fp32."""
    if type(layer) is nn.Linear:
        return affine(layer, "", x, [layer.weight], [layer.bias], act, add)
    if isinstance(layer, lora.LoRALinear):
        y = affine(layer, "", x, [layer.weight], [layer.bias])
        z = low_rank_update(layer, x)
        return finish(y if z is None else y.add_(z, alpha=layer.scaling), act, add)
    return finish(layer(x.float()).to(x.dtype), act, add)


def low_rank_update(layer: lora.LoRALinear, x):
    """B A dropout(x) of a LoRA layer (to be scaled by layer.scaling), or None: merged into its
    weight. The arithmetic of LoRALinear.forward, computed here so that the frozen base weight can
    join the fused q/k/v product and keep its cast between steps, and so that the dropout uses the
    cheaper mask."""
    if layer.merged:
        return None
    drop = layer.lora_dropout
    if isinstance(drop, nn.Dropout) and drop.training and drop.p > 0:
        x = x * dropout_mask(x.shape, drop.p, x.dtype, x.device)  # its own mask per layer, as in peft
    return linear(layer.lora_B, linear(layer.lora_A, x))


# -----------------------------------------------------------------------------
# Dropout


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
    """nn.Dropout with a cheaper mask (dropout_mask), and the residual add fused with it. Still an
    nn.Dropout: its .p is the probability it drops with, whoever sets it."""

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


def dropout_residual(x, dropout, dense, h):
    """x + dropout(dense(h)): while training the mask and the add in one kernel (Dropout.residual),
    otherwise the add fused into the matrix product where the kernel exists (matmul_bias)."""
    if dropout.training and dropout.p > 0:
        return dropout.residual(x, linear(dense, h))
    return linear(dense, h, add=x)


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


# -----------------------------------------------------------------------------
# The fast modules: model.py's, with the forward computed as above


class CastingLayerNorm(nn.LayerNorm):
    """The embeddings' LayerNorm, its output in compute_dtype: the one cast of the activations."""

    compute_dtype = torch.float32

    def forward(self, x):
        return super().forward(x).to(self.compute_dtype)


class SelfAttention(M.BertSelfAttention):
    """Attention from one q/k/v product (LoRA's terms added to it); while training with dropout,
    attention_with_dropout, else SDPA's fused kernel."""

    def project(self, x):
        """(B, T, H) -> (B, T, 3H): q, k and v side by side."""
        layers = (self.query, self.key, self.value)
        if not all((type(m) is nn.Linear or isinstance(m, lora.LoRALinear)) and m.bias is not None for m in layers):
            return torch.cat([linear(m, x) for m in layers], dim=-1)  # e.g. int8 layers: each on its own
        # One GEMM of width 3H instead of three of width H: the matrix unit stays busy longer per
        # call. The parameters stay three nn.Linear (query, key, value, as on disk and for LoRA);
        # the concatenation is made here, with the cast (kept between calls when frozen).
        qkv = affine(self, "qkv", x, [m.weight for m in layers], [m.bias for m in layers])
        H = x.size(-1)
        for i, m in enumerate(layers):  # LoRA layers: their low-rank terms on top
            z = low_rank_update(m, x) if isinstance(m, lora.LoRALinear) else None
            if z is not None:
                qkv[..., i * H:(i + 1) * H].add_(z, alpha=m.scaling)
        return qkv

    def forward(self, x, mask=None):
        B, T, H = x.shape
        qkv = self.project(x)
        p = self.dropout.p if self.training else 0.0
        if p > 0:
            y = attention_with_dropout(qkv, mask, self.n_head, p)
        else:
            # No dropout: SDPA's fused kernel, which never writes the (T, T) scores to memory.
            q, k, v = (t.view(B, T, self.n_head, H // self.n_head).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return y.transpose(1, 2).reshape(B, T, H)  # (B, n_head, T, head_dim) -> (B, T, H)


class SelfOutput(M.BertSelfOutput):
    """The residual add fused with the dropout mask or into the matrix product (dropout_residual)."""

    def forward(self, y, x):
        return self.LayerNorm(dropout_residual(x, self.dropout, self.dense, y))  # LayerNorm(x + Dropout(Dense(y)))


class Intermediate(M.BertIntermediate):
    """The GELU fused into the matrix product where oneDNN has the kernel (matmul_bias)."""

    def forward(self, x):
        return linear(self.dense, x, act=self.act)  # (B, T, intermediate)


class Output(M.BertOutput):
    """As SelfOutput."""

    def forward(self, h, x):
        return self.LayerNorm(dropout_residual(x, self.dropout, self.dense, h))  # (B, T, H)


class Pooler(M.BertPooler):
    """The head in fp32: it is tiny, so it runs in fp32 whatever the encoder ran in, and logits and
    probabilities keep fp32's precision for free (the classifier then gets fp32 too)."""

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0].float()))  # (B, H)


FAST = {M.BertSelfAttention: SelfAttention, M.BertSelfOutput: SelfOutput, M.BertIntermediate: Intermediate,
        M.BertOutput: Output, M.BertPooler: Pooler, nn.Dropout: Dropout}
PLAIN = {fast: plain for plain, fast in FAST.items()} | {CastingLayerNorm: nn.LayerNorm}


def prepare(net: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Every module of `net` that has a fast subclass turned into it, computing in `dtype` over
    its fp32 parameters (which are not changed). Returns net."""
    unprepare(net)  # prepared before: start again from the plain model
    for m in net.modules():
        if type(m) in FAST:
            m.__class__ = FAST[type(m)]
        if isinstance(m, M.BertEmbeddings):
            m.LayerNorm.__class__ = CastingLayerNorm
            m.LayerNorm.compute_dtype = dtype
    return net


def store_in_compute_dtype(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """
    For a prepared model that will only label texts: the weights and biases of the encoder's
    linear layers stored in `dtype` itself, so that no fp32 master is kept beside the copy the
    arithmetic uses (compute_copy takes a weight already in its dtype as it is). The values are
    those the arithmetic used before (the same cast, done once), so the outputs are the same;
    the memory of those weights is halved instead of 1.5 times (in bf16: 87 MiB of the 6-layer
    all-MiniLM-L6-v2's fp32 weights kept, 43 MiB of them given back). The embeddings and the head
    stay fp32. Not for a model that is trained or saved; unprepare casts them back to fp32 (the
    rounded values). Returns net.
    """
    if dtype == torch.float32:
        return net
    for m in net.modules():
        if isinstance(m, (SelfAttention, SelfOutput, Intermediate, Output)):
            for layer in m.modules():
                if type(layer) is nn.Linear or (isinstance(layer, lora.LoRALinear) and layer.merged):
                    for p in (layer.weight, layer.bias):
                        if p is not None and not p.requires_grad:
                            p.data = p.data.to(dtype)
            m.__dict__.pop("_compute_copies", None)
    return net


def unprepare(net: nn.Module) -> nn.Module:
    """net as model.py writes it again: every fast module back to its plain class, the kept copies
    of frozen weights dropped, weights stored in another dtype (store_in_compute_dtype) fp32
    again. Returns net."""
    for p in net.parameters():
        if p.dtype != torch.float32 and p.is_floating_point():
            p.data = p.data.float()
    for m in net.modules():
        if type(m) in PLAIN:
            m.__class__ = PLAIN[type(m)]
            m.__dict__.pop("compute_dtype", None)  # CastingLayerNorm's
        m.__dict__.pop("_compute_copies", None)
    return net
