"""
Layer-copy knowledge distillation: a student BERT built from some of a fine-tuned teacher's
encoder layers, and the loss that trains it to behave like the teacher.

The student starts as a copy: the teacher's embeddings, the chosen layers in order, its pooler
and its classifier. Training then pulls it towards the teacher on three signals at once:
  alpha * cross-entropy on the true labels
+ beta  * KL divergence between the softened class distributions (temperature T, times T^2)
+ gamma * a distance between each student layer's output and the teacher layer it came from.
One of the original write-ups trained on the hidden-state term alone and got a student that
predicts one class for everything: the labels are part of the default. With an ensemble teacher
(EnsembleTeacher: several teachers, e.g. seeds) the soft term learns their mean distribution.
"""

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F

from model import BertForSequenceClassification


def parse_layers(spec: str | list, n_teacher: int, importance: list | None = None) -> list[int]:
    """
    Teacher layers (1-based, as the assignment writes them) that the student keeps:
    'odd' = 1,3,5,...  'even' = 2,4,6,...  'bottom' = the first half, 'top' = the second half,
    'auto' = the half with the highest measured importance (see layer_importance; 'auto:K' keeps K),
    or an explicit list such as '1,2,12' or [1, 2, 12].
    """
    half = max(1, n_teacher // 2)
    if isinstance(spec, str) and spec in ("odd", "even"):
        layers = list(range(1 if spec == "odd" else 2, n_teacher + 1, 2))
    elif isinstance(spec, str) and spec in ("bottom", "top"):
        layers = list(range(1, half + 1)) if spec == "bottom" else list(range(n_teacher - half + 1, n_teacher + 1))
    elif isinstance(spec, str) and spec.split(":")[0] == "auto":
        k = spec.partition(":")[2]
        if k and not (k.isdigit() and 1 <= int(k) <= n_teacher):
            raise ValueError(f"--layers {spec!r}: expected auto or auto:K with K in 1..{n_teacher}")
        if importance is None or len(importance) != n_teacher:
            raise ValueError(f"--layers {spec!r}: needs the importance of each of the {n_teacher} teacher layers")
        k = int(k) if k else half
        # The k most important layers, run in their original order.
        return sorted(sorted(range(1, n_teacher + 1), key=lambda i: -importance[i - 1])[:k])
    else:
        try:
            layers = [int(x) for x in (spec.split(",") if isinstance(spec, str) else spec) if str(x).strip()]
        except ValueError:
            raise ValueError(f"--layers {spec!r}: expected odd, even, bottom, top, auto[:K] or comma-separated "
                             "layer numbers like 1,3,5") from None
    if not layers:
        raise ValueError(f"--layers {spec!r}: no layers chosen; expected at least one of 1..{n_teacher}")
    bad = [i for i in layers if not 1 <= i <= n_teacher]
    if bad:
        raise ValueError(f"--layers {spec!r}: layer {bad[0]} out of range; the teacher has layers 1..{n_teacher}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"--layers {spec!r}: repeated layer {next(i for i in layers if layers.count(i) > 1)}")
    if layers != sorted(layers):
        raise ValueError(f"--layers {spec!r}: list the layers in increasing order, the order they run in")
    return layers


def yes_no_log_probs(logits):
    """(..., L) logits of a multi-label task -> (..., L, 2) log-probabilities of no and yes per label."""
    return torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=-1)


@torch.no_grad()
def layer_importance(teacher: BertForSequenceClassification, batches) -> list[float]:
    """
    How much the fine-tuned teacher relies on each of its layers, measured by taking the layer out:
    for layer l, the mean over texts of KL(p_teacher || p_teacher without layer l), where p is the
    class distribution (a multi-label teacher: each label's yes/no distribution, the KLs summed over
    the labels, since its sigmoids answer separate questions and a softmax across them would see
    only the gap between the logits). A layer the teacher can lose without changing its predictions
    matters little to a student that copies the teacher; a large KL marks a layer worth keeping.
    batches: (input_ids, attention_mask, token_type_ids) tuples, e.g. the validation split.
    Cost: one forward pass of the teacher over the batches per layer, plus one.
    """
    if not batches:
        raise ValueError("layer importance needs at least one batch of texts")
    teacher.eval()
    layers = teacher.bert.encoder.layer

    def log_probs(b):  # (B, classes) or (B, labels, 2): the distributions the KL compares
        logits = teacher(*b).logits.float()
        return yes_no_log_probs(logits) if teacher.config.multilabel else F.log_softmax(logits, dim=-1)

    reference = [log_probs(b) for b in batches]
    n = sum(r.shape[0] for r in reference)
    scores = []
    try:
        for skip in range(len(layers)):
            teacher.bert.encoder.layer = torch.nn.ModuleList([m for i, m in enumerate(layers) if i != skip])
            kl = sum(F.kl_div(log_probs(b), r, log_target=True, reduction="sum")
                     for b, r in zip(batches, reference, strict=True))
            scores.append(float(kl) / n)
    finally:
        teacher.bert.encoder.layer = layers  # the teacher leaves as it came, whatever happened
    return scores


def make_student(teacher: BertForSequenceClassification, layers: list[int]) -> BertForSequenceClassification:
    """A copy of teacher that keeps only the given encoder layers (1-based), in order."""
    config = replace(teacher.config, num_hidden_layers=len(layers), id2label=dict(teacher.config.id2label))
    student = BertForSequenceClassification(config)
    weights = {}
    for key, value in teacher.state_dict().items():
        if key.startswith("bert.encoder.layer."):
            continue
        weights[key] = value
    for i, t in enumerate(layers):
        prefix = f"bert.encoder.layer.{t - 1}."
        for key, value in teacher.state_dict().items():
            if key.startswith(prefix):
                weights[f"bert.encoder.layer.{i}." + key[len(prefix):]] = value
    student.load_state_dict(copy.deepcopy(weights), strict=True)
    student.teacher_layers = list(layers)
    if hasattr(teacher, "source_dir"):
        student.source_dir = teacher.source_dir  # where its tokenizer files are
    return student


@torch.no_grad()
def teacher_forward(teacher, input_ids, attention_mask, token_type_ids=None):
    # The teacher is a fixed target: no dropout noise, no graph, no gradients.
    teacher.eval()
    return teacher(input_ids, attention_mask, token_type_ids)


class EnsembleTeacher(torch.nn.Module):
    """
    Several teachers answering as one (an ensemble teacher): the soft term of the loss learns the mean
    of their softened distributions, p_bar = (1/K) sum_k softmax(z_k / T), or per label the mean yes
    probability sigmoid(z_k / T) of a multi-label task. The student copies the first teacher's layers,
    so the hidden-state term follows the first teacher alone: the others' layers are not what it
    started from. The teachers must answer the same questions (the same labels in the same order).
    """

    def __init__(self, teachers, T: float):
        super().__init__()
        self.teachers, self.T = torch.nn.ModuleList(teachers), T

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        outs = [t(input_ids, attention_mask, token_type_ids) for t in self.teachers]
        multilabel = self.teachers[0].config.problem_type == "multi_label_classification"
        return outs[0]._replace(logits=ensemble_logits([o.logits for o in outs], self.T, multilabel))


def ensemble_logits(logits, T: float, multilabel: bool):
    """
    Logits z_bar whose distribution at temperature T is the mean of the K teachers' distributions at T,
    so that soft_kl and soft_binary_kl take an ensemble as they take one teacher:
      classes:   z_bar = T * log p_bar,                    p_bar = mean_k softmax(z_k / T)
      per label: z_bar = T * (log p_bar - log(1 - p_bar)), p_bar = mean_k sigmoid(z_k / T)
    Both computed from log-probabilities (logsumexp), so a confident teacher does not overflow.
    """
    z = torch.stack([x.float() for x in logits]) / T  # (K, B, C) or (K, B, L)
    log_k = torch.log(torch.tensor(float(len(logits))))
    if multilabel:
        log_yes = torch.logsumexp(F.logsigmoid(z), dim=0) - log_k  # log p_bar
        log_no = torch.logsumexp(F.logsigmoid(-z), dim=0) - log_k  # log (1 - p_bar)
        return T * (log_yes - log_no)
    return T * (torch.logsumexp(F.log_softmax(z, dim=-1), dim=0) - log_k)


def soft_kl(student_logits, teacher_logits, T: float):
    """KL(p_teacher || p_student) on distributions softened by T, times T^2 (Hinton et al. 2015)
    so that its gradients keep the same scale whatever T is. Averaged over the batch."""
    log_p_student = F.log_softmax(student_logits / T, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / T, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * T * T


def hidden_loss(student_hidden, teacher_hidden, layers, attention_mask, kind: str = "cosine"):
    """
    Mean distance between student layer i's output and the output of teacher layer layers[i],
    over real (non-padding) tokens. hidden_states[0] is the embedding output, so layer L's
    output is hidden_states[L]. kind: 'cosine' (1 - cosine similarity) or 'mse'.
    """
    # In fp32 whatever the models computed in: a bf16 cosine of two near-equal vectors is mostly rounding.
    mask = attention_mask.to(torch.float32)  # (B, T)
    total = 0.0
    for i, t in enumerate(layers):
        s, h = student_hidden[i + 1].float(), teacher_hidden[t].float()  # (B, T, H)
        if kind == "cosine":
            d = 1.0 - F.cosine_similarity(s, h, dim=-1)  # (B, T)
        elif kind == "mse":
            d = (s - h).pow(2).mean(dim=-1)  # (B, T)
        else:
            raise ValueError(f"hidden loss {kind!r}: expected 'cosine' or 'mse'")
        total = total + (d * mask).sum() / mask.sum()
    return total / len(layers)


def masked_bce(logits, labels, pos_weight=None):
    """Binary cross-entropy of a multi-label task, one sigmoid per label, averaged over the (text, label)
    pairs that are annotated: a label marked -1 (its source does not annotate it) has weight 0, so no
    gradient flows through it. pos_weight (L,) weighs the positives of each label (rare hate)."""
    mask = (labels >= 0).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.clamp(min=0).float(), weight=mask,
                                              pos_weight=pos_weight, reduction="sum")
    return loss / mask.sum().clamp(min=1)


def soft_binary_kl(student_logits, teacher_logits, T: float, mask):
    """The multi-label soft term: per label, KL between the teacher's and the student's yes/no
    distributions softened by T, times T^2; averaged over the annotated (text, label) pairs."""
    log_s, log_t = yes_no_log_probs(student_logits / T), yes_no_log_probs(teacher_logits / T)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # (B, L)
    mask = mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp(min=1) * T * T


def distill_loss(student_out, teacher_out, labels, layers, attention_mask,
                 alpha=1 / 3, beta=1 / 3, gamma=1 / 3, T=2.0, hidden="cosine", pos_weight=None):
    """The weighted sum and its three parts (as floats, for logging). labels (B,): one class per text;
    (B, L) with -1 where not annotated: a multi-label task, whose unannotated labels are left out of
    both the hard and the soft term."""
    if labels.dim() == 2:
        ce = masked_bce(student_out.logits, labels, pos_weight)
        kl = soft_binary_kl(student_out.logits.float(), teacher_out.logits.float(), T, labels >= 0)
    else:
        ce = F.cross_entropy(student_out.logits, labels)
        kl = soft_kl(student_out.logits, teacher_out.logits, T)
    hs = hidden_loss(student_out.hidden_states, teacher_out.hidden_states, layers, attention_mask, hidden)
    loss = alpha * ce + beta * kl + gamma * hs
    return loss, {"ce": ce.item(), "kl": kl.item(), "hidden": hs.item()}
