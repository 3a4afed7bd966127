"""Regularized Focus Mechanism (docs/method.md §2): graph-regularised class tokens Q, the CAM-prior regularisers
(CRE, URE), class-token discrimination (MCT) and the inhibition map I (MoRe's LAM).

Symbols follow docs/method.md: T class tokens (B, C, D), P patch tokens (B, N, D), Q graph class tokens (B, C, D),
M prior map on the token grid (B, N) with values 0..C-1 (confident class), ``LOW`` or ``UNCERTAIN``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "LOW",
    "UNCERTAIN",
    "GraphClassTokens",
    "prior_map",
    "inhibition_map",
    "cre_loss",
    "ure_loss",
    "ure_select",
    "mct_loss",
    "uncertain_suppression_loss",
]

UNCERTAIN = 255
"""Prior value of tokens between lambda_low and lambda_high."""
LOW = 254
"""Prior value of low-activation tokens (no tissue class is background here: 'low' means 'not trusted')."""


class GraphClassTokens(nn.Module):
    """Graph category representation (MoRe GCR, the paper's Eq. 1) in MoRe's code form.

    Each class token is a head; the tails are the class tokens and the (detached) patch tokens. Each head
    keeps its top-K tails by scaled dot product, builds edge embeddings, aggregates them with gated
    attention and fuses the aggregate bidirectionally with a residual to T, so Q ~ T at initialisation.

    Args:
        dim: token dimension D.
        topk_ratio: K = floor(topk_ratio * N) (the paper's rule: half the patch tokens).
    """

    def __init__(self, dim: int, topk_ratio: float = 0.5) -> None:
        super().__init__()
        self.topk_ratio = topk_ratio
        self.lin_head = nn.Linear(dim, dim)
        self.lin_tail = nn.Linear(dim, dim)
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)
        self.act = nn.LeakyReLU()
        self.norm = nn.LayerNorm(dim)
        self.scale = dim**-0.5

    def forward(self, tokens: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Q from T (B, C, D) and P (B, N, D); P is detached here, as in MoRe."""
        n = patches.shape[1]
        h = self.lin_head(tokens)  # (B, C, D)
        tails = self.lin_tail(torch.cat([tokens, patches.detach()], dim=1))  # (B, C+N, D)
        scores = torch.einsum("bcd,bkd->bck", h * self.scale, tails)  # (B, C, C+N)
        k = max(1, min(int(self.topk_ratio * n), tails.shape[1]))
        val, idx = scores.topk(k, dim=-1)  # (B, C, K)
        r = val.softmax(dim=-1).unsqueeze(-1)  # edge weights r_ij
        b, c, _ = idx.shape
        nb = torch.gather(tails.unsqueeze(1).expand(b, c, -1, -1), 2, idx.unsqueeze(-1).expand(-1, -1, -1, h.shape[-1]))
        hk = h.unsqueeze(2)
        edge = r * nb + (1 - r) * hk  # (B, C, K, D)
        gate = torch.tanh(hk + edge)
        alpha = (nb * gate).sum(-1).softmax(dim=-1).unsqueeze(-1)  # (B, C, K, 1)
        a = (alpha * nb).sum(2)  # (B, C, D)
        q = self.act(self.w1((h + a) * 0.1 + tokens)) + self.act(self.w2((h * a) * 0.1 + tokens))
        return self.norm(q)


def inhibition_map(patches_2d: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """I_c(j) = <p_j, Q_c>, the raw dot product of patch tokens and graph class tokens, (B, C, h, w)."""
    return torch.einsum("bdhw,bcd->bchw", patches_2d, q)


def prior_map(cam: torch.Tensor, labels: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Prior map M on the token grid from a normalised CAM (B, C, h, w) in [0, 1] and labels (B, C).

    M = argmax class where the label-masked max > high, LOW where it is <= low, UNCERTAIN between.
    Returns (B, h*w) long.
    """
    masked = cam * labels[:, :, None, None]
    val, arg = masked.max(dim=1)
    m = torch.full_like(arg, UNCERTAIN)
    m[val > high] = arg[val > high]
    m[val <= low] = LOW
    return m.flatten(1)


def cre_loss(
    q: torch.Tensor, patches: torch.Tensor, prior: torch.Tensor, labels: torch.Tensor, tau: float
) -> torch.Tensor:
    """Confident relation enhancement L_cre (MoRe Eq. 7, CRELoss_neg), in log-softmax form.

    For each present class l, the normalised q_l should pick out the confident tokens of class l among all
    N patch tokens (softmax over patches; patch tokens detached and not normalised, as in the code).
    """
    qn = F.normalize(q, dim=-1)
    logits = torch.einsum("bcd,bnd->bcn", qn, patches.detach()).float() / tau
    logp = logits.log_softmax(dim=-1)
    classes = torch.arange(q.shape[1], device=q.device)
    mask = (prior.unsqueeze(1) == classes[None, :, None]).float() * labels.unsqueeze(-1)
    per = -(logp * mask).sum(-1) / (mask.sum(-1) + 1e-4)  # (B, C); absent classes contribute 0
    return per.sum(1).mean()


def ure_select(
    prior: torch.Tensor, grid: tuple[int, int], kernel: int, phi: float, max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel search for uncertain tokens surrounded by uncertain/confident ones (MoRe URELoss_neg).

    The window is centred on the token (MoRe indexes it off-centre; docs/method.md §2.2 recommends centring) and
    clipped at the borders: score = sum(ROI in window) / kernel^2 with ROI 1 uncertain, 2 confident. At most
    ``max_tokens`` selected at random per image; when fewer are found, floor((max - n) / 4) random confident
    tokens are added.

    Returns:
        (indices (B, S) long, valid (B, S) bool) with S = max_tokens + max_tokens // 4.
    """
    b, n = prior.shape
    confident = prior < LOW
    uncertain = prior == UNCERTAIN
    roi = uncertain.float() + 2 * confident.float()
    score = F.avg_pool2d(roi.view(b, 1, *grid), kernel, stride=1, padding=kernel // 2, count_include_pad=True)
    score = score[..., : grid[0], : grid[1]]  # an even kernel pads one extra row/column
    cand = uncertain & (score.flatten(1) >= phi)
    s = min(max_tokens, n)
    pri = torch.rand(b, n, device=prior.device).masked_fill(~cand, -1.0)
    val, idx = pri.topk(s, dim=1)
    valid = val >= 0
    n_found = valid.sum(1)
    extra_max = max_tokens // 4
    if extra_max:
        pri_c = torch.rand(b, n, device=prior.device).masked_fill(~confident, -1.0)
        val_c, idx_c = pri_c.topk(min(extra_max, n), dim=1)
        n_extra = torch.div(max_tokens - n_found, 4, rounding_mode="floor")
        keep = (val_c >= 0) & (torch.arange(val_c.shape[1], device=prior.device)[None] < n_extra[:, None])
        idx = torch.cat([idx, idx_c], 1)
        valid = torch.cat([valid, keep], 1)
    return idx, valid


def ure_loss(
    q: torch.Tensor, patches: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Uncertain relation enhancement L_ure (MoRe Eq. 8-9): pull selected tokens towards all present class
    tokens and away from absent ones, with absolute cosine; Q detached, the patch tokens keep their grad."""
    u = torch.gather(patches, 1, idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    cos = torch.einsum("bsd,bcd->bsc", F.normalize(u.float(), dim=-1), F.normalize(q.detach().float(), dim=-1)).abs()
    pos = labels.float()[:, None, :]
    n_pos = pos.sum(-1)
    n_neg = (1 - pos).sum(-1)
    pos_term = 1 - (cos * pos).sum(-1) / (n_pos + 1)
    neg_term = (cos * (1 - pos)).sum(-1) / (n_neg + 1)
    per = 0.5 * pos_term + 0.5 * neg_term  # (B, S)
    valid = valid.float()
    return (per * valid).sum() / valid.sum().clamp(min=1)


def uncertain_suppression_loss(
    q: torch.Tensor, patches: torch.Tensor, prior: torch.Tensor, argmax: torch.Tensor
) -> torch.Tensor:
    """The paper's literal reading (ablation ``lir_mode: sia_literal``): suppress |cos(p, q_c*)| of uncertain
    tokens, c* being their CAM argmax class."""
    unc = (prior == UNCERTAIN).float()
    qc = torch.gather(q, 1, argmax.unsqueeze(-1).expand(-1, -1, q.shape[-1]))  # (B, N, D)
    cos = F.cosine_similarity(patches.float(), qc.float(), dim=-1).abs()
    return (cos * unc).sum() / unc.sum().clamp(min=1)


def mct_loss(q: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Class-token discrimination L_mct: cross-entropy that makes each normalised q_c closest to itself."""
    qn = F.normalize(q.float(), dim=-1)
    sim = torch.einsum("bcd,bkd->bck", qn, qn) / tau
    b, c, _ = sim.shape
    target = torch.arange(c, device=q.device).repeat(b)
    return F.cross_entropy(sim.reshape(b * c, c), target)
