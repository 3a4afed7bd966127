"""Discriminative Activation Module (docs/method.md §3): ToCo's class-token contrast between global and local views.

The local crops are cut where the CAM is not confident; crops dominated by low activation are negatives.
A student projection head P_f sees all views; an EMA teacher P_c sees the two global views. The loss is
ToCo's CTCLoss_neg (the correct form of the paper's malformed Eq. 2), computed in log space.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ProjectionHead", "DAMHeads", "roi_map", "sample_local_crops", "ctc_loss"]


class ProjectionHead(nn.Module):
    """Projection of a view descriptor.

    Args:
        dim: descriptor dimension D.
        out_dim: projection dimension (256).
        kind: 'linear' (Linear + L2 norm, the paper) or 'toco' (3-layer MLP, L2 norm, weight-normalised
            prototype layer with g frozen at 1; its outputs are not unit-norm).
    """

    def __init__(self, dim: int, out_dim: int = 256, kind: str = "linear") -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.proj = nn.Linear(dim, out_dim)
        elif kind == "toco":
            hidden = 2048
            self.proj = nn.Sequential(
                nn.Linear(dim, hidden),
                nn.GELU(),
                nn.Linear(hidden, hidden),
                nn.GELU(),
                nn.Linear(hidden, out_dim),
            )
            self.last = nn.utils.parametrizations.weight_norm(nn.Linear(out_dim, 1024, bias=False))
            with torch.no_grad():
                self.last.parametrizations.weight.original0.fill_(1.0)
            self.last.parametrizations.weight.original0.requires_grad = False
        else:
            raise ValueError(f"unknown DAM head '{kind}' (use 'linear' or 'toco')")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.proj(x).float(), dim=-1)
        if self.kind == "toco":
            x = self.last(x)
        return x


class DAMHeads(nn.Module):
    """Student head P_f and its EMA teacher P_c (momentum 0.9, updated every training step)."""

    def __init__(self, dim: int, out_dim: int = 256, kind: str = "linear", momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.student = ProjectionHead(dim, out_dim, kind)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad = False

    @torch.no_grad()
    def update_teacher(self) -> None:
        for ps, pt in zip(self.student.parameters(), self.teacher.parameters()):
            pt.mul_(self.momentum).add_(ps.detach(), alpha=1 - self.momentum)


def roi_map(cam: torch.Tensor, labels: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """ROI for crop sampling from a normalised CAM (B, C, H, W): 0 low (v <= low), 2 confident (v >= high),
    1 in between, where v is the max over present classes. Returns (B, H, W) float."""
    v = (cam * labels[:, :, None, None]).amax(1)
    roi = torch.ones_like(v)
    roi[v <= low] = 0
    roi[v >= high] = 2
    return roi


def sample_local_crops(
    source: torch.Tensor, roi: torch.Tensor, n: int, size: int, neg_threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``n`` local crops per image from ``source`` (B, 3, H, W) centred on non-confident positions.

    Centres are drawn at random among interior positions (margin size/2) whose ROI <= 1, falling back to
    any interior position when there are too few. A crop is negative when its mean ROI <= neg_threshold.

    Returns:
        crops (B*n, 3, size, size) and flags (B, n) with 1 = positive, 0 = negative.
    """
    b, ch, h, w = source.shape
    half = size // 2
    dev = source.device
    interior = torch.zeros(h, w, dtype=torch.bool, device=dev)
    interior[half : h - (size - half) + 1, half : w - (size - half) + 1] = True
    pri = torch.rand(b, h, w, device=dev)
    pri = pri + (roi <= 1).float()  # candidates first
    pri = pri.masked_fill(~interior, -1.0).flatten(1)
    idx = pri.topk(n, dim=1).indices  # (B, n)
    y0 = torch.div(idx, w, rounding_mode="floor") - half
    x0 = idx % w - half
    ar = torch.arange(size, device=dev)
    rows = (y0[..., None] + ar)[..., :, None]  # (B, n, s, 1)
    cols = (x0[..., None] + ar)[..., None, :]  # (B, n, 1, s)
    bidx = torch.arange(b, device=dev)[:, None, None, None]
    crops = source.permute(0, 2, 3, 1)[bidx, rows, cols]  # (B, n, s, s, 3)
    crops = crops.permute(0, 1, 4, 2, 3).reshape(b * n, ch, size, size)
    roi_crops = roi[bidx, rows, cols]  # (B, n, s, s)
    flags = (roi_crops.flatten(2).mean(-1) > neg_threshold).float()
    return crops, flags


def ctc_loss(
    teacher: torch.Tensor,
    student: torch.Tensor,
    pos_mask: torch.Tensor,
    neg_mask: torch.Tensor,
    tau: float = 0.5,
    eps: float = 1e-4,
) -> torch.Tensor:
    """ToCo's CTCLoss_neg in log space.

    For image b with teacher outputs t_g (g = 1, 2), student outputs f_k and logits s = t.f / tau:

        l_b = 1 / (2 (|Pos| + 1e-4)) * sum_g [ sum_{k in Pos} -log(e^s_gk / (e^s_gk + sum_Neg e^s_gn + eps))
                                               - log(1 / (1 + sum_Neg e^s_gn + eps)) ]

    Args:
        teacher: (B, G, E) teacher embeddings (no grad).
        student: (M, E) all student embeddings of the batch (M = B * V when only own views are used).
        pos_mask: (B, M) which student embeddings are positives of image b.
        neg_mask: (B, M) which are negatives of image b (own negative crops, optionally other images').
        tau: temperature.
        eps: ToCo's 1e-4 inside the denominator.

    Returns:
        Scalar L_dam = mean_b l_b.
    """
    s = torch.einsum("bge,me->bgm", teacher.float(), student.float()) / tau  # (B, G, M)
    neg = neg_mask[:, None, :].bool()
    lse_neg = s.masked_fill(~neg, float("-inf")).logsumexp(-1)  # (B, G); -inf without negatives
    log_eps = torch.full_like(lse_neg, torch.log(torch.tensor(eps)).item())
    log_neg_eps = torch.logaddexp(lse_neg, log_eps)  # log(sum_Neg e^s + eps)
    pos_terms = torch.logaddexp(s, log_neg_eps[..., None]) - s  # (B, G, M)
    pos = pos_mask[:, None, :].float()
    pos_sum = (pos_terms * pos).sum(-1)  # (B, G)
    push = F.softplus(log_neg_eps)  # log(1 + sum_Neg e^s + eps)
    n_pos = pos_mask.float().sum(-1)
    per = (pos_sum + push).sum(1) / (teacher.shape[1] * (n_pos + 1e-4))
    return per.mean()
