"""
The optimizer and its learning-rate schedule, as BERT fine-tuning has always used them: AdamW with
weight decay on the weight matrices only, and a learning rate that rises linearly over the first
--warmup fraction of the steps, then falls linearly to zero at the last step.
"""

import torch


def make_optimizer(net, s, fused):
    # No weight decay on biases and LayerNorm weights: decaying them towards zero only hurts.
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, fused=fused)


def lr_at(step, total, s):
    """Linear warmup over the first `warmup` fraction of the steps, then linear decay to zero."""
    warm = max(1, int(s.warmup * total))
    if step < warm:
        return s.lr * (step + 1) / warm
    return s.lr * max(0.0, (total - step) / max(1, total - warm))
