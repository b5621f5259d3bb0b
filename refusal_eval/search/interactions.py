"""Stage 3: a second-order factorization machine over pooled SAE activations (Rendle 2010),
a logistic-regression probe baseline, and ranking of latents that interact with the minimal set.

``y = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j`` is fit to harmful (1) vs harmless (0)
with binary cross-entropy and Adam. A non-minimal latent ``j`` scores
``sum_{i in S_min} <v_i, v_j>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


class FactorizationMachine(nn.Module):
    def __init__(self, n_features: int, rank: int, init_std: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w0 = nn.Parameter(torch.zeros(()))
        self.w = nn.Parameter(torch.zeros(n_features))
        self.V = nn.Parameter(torch.randn(n_features, rank, generator=gen) * init_std)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(batch,)``; the pairwise term in O(n k) via Rendle's identity."""
        xv = x @ self.V
        pairwise = 0.5 * (xv.pow(2) - (x.pow(2) @ self.V.pow(2))).sum(-1)
        return self.w0 + x @ self.w + pairwise


def split(n: int, test_frac: float, seed: int, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Deterministic train/test indices (stratified by ``y`` when given)."""
    gen = torch.Generator().manual_seed(seed)
    groups = [torch.arange(n)] if y is None else [torch.nonzero(y == c).flatten() for c in torch.unique(y)]
    train, test = [], []
    for g in groups:
        g = g[torch.randperm(len(g), generator=gen)]
        n_test = max(1, round(len(g) * test_frac)) if len(g) > 1 else 0
        test.append(g[:n_test])
        train.append(g[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def accuracy(logits: Tensor, y: Tensor) -> float:
    return float(((logits > 0).float() == y).float().mean()) if len(y) else float("nan")


@dataclass
class FitResult:
    model: FactorizationMachine
    train_accuracy: float
    test_accuracy: float
    losses: list[float]


def fit_fm(
    x: Tensor,
    y: Tensor,
    train: Tensor,
    test: Tensor,
    *,
    rank: int = 20,
    lr: float = 1e-3,
    epochs: int = 20,
    batch_size: int = 16,
    init_std: float = 0.1,
    seed: int = 0,
    l2_linear: float = 0.0,
    l2_factors: float = 0.0,
) -> FitResult:
    """Fit the FM on ``x[train]``; report accuracy on ``train`` and ``test``. ``l2_linear`` /
    ``l2_factors`` add ``l2 * ||w||^2`` / ``l2 * ||V||^2`` to the mean cross-entropy (0: none)."""
    fm = FactorizationMachine(x.shape[1], rank, init_std, seed)
    opt = torch.optim.Adam(fm.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    loss_fn = nn.BCEWithLogitsLoss()
    losses: list[float] = []
    with torch.enable_grad():
        for _ in range(epochs):
            order = train[torch.randperm(len(train), generator=gen)]
            total = 0.0
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                opt.zero_grad()
                loss = loss_fn(fm(x[idx]), y[idx])
                total += loss.item() * len(idx)
                if l2_linear:
                    loss = loss + l2_linear * fm.w.pow(2).sum()
                if l2_factors:
                    loss = loss + l2_factors * fm.V.pow(2).sum()
                loss.backward()
                opt.step()
            losses.append(total / max(1, len(train)))
    with torch.no_grad():
        logits = fm(x)
    return FitResult(fm, accuracy(logits[train], y[train]), accuracy(logits[test], y[test]), losses)


@dataclass
class FmEnsemble:
    """``members`` FMs fit from different random starts; their logits and interaction scores are
    averaged. On a few dozen prompts and thousands of features one FM's held-out accuracy and
    ranking depend on its start (docs/search): the average does not."""

    members: list[FactorizationMachine]
    train_accuracy: float
    test_accuracy: float
    losses: list[float]  # the members' mean training loss per epoch

    def scores(self, minimal: Sequence[int]) -> Tensor:
        """The members' mean :func:`interaction_scores` (minimal features stay -inf)."""
        return torch.stack([interaction_scores(m.V.detach(), minimal) for m in self.members]).mean(0)


def fit_fm_ensemble(
    x: Tensor, y: Tensor, train: Tensor, test: Tensor, *, members: int = 1, seed: int = 0, **kw: Any
) -> FmEnsemble:
    """:func:`fit_fm` ``members`` times (seeds ``seed``, ``seed + 1``, ...), logits averaged; one
    member is exactly :func:`fit_fm` with ``seed``."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    fits = [fit_fm(x, y, train, test, seed=seed + m, **kw) for m in range(members)]
    with torch.no_grad():
        logits = torch.stack([f.model(x) for f in fits]).mean(0)
    losses = [sum(f.losses[e] for f in fits) / members for e in range(len(fits[0].losses))]
    return FmEnsemble(
        [f.model for f in fits], accuracy(logits[train], y[train]), accuracy(logits[test], y[test]), losses
    )


@dataclass
class ProbeResult:
    weights: Tensor
    train_accuracy: float
    test_accuracy: float


def fit_probe(x: Tensor, y: Tensor, train: Tensor, test: Tensor, *, c: float = 1.0) -> ProbeResult:
    """L2 logistic regression (scikit-learn lbfgs, deterministic)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=2000)
    xs, ys = x.numpy(), y.numpy()
    clf.fit(xs[train.numpy()], ys[train.numpy()])
    logits = torch.from_numpy(clf.decision_function(xs)).float()
    return ProbeResult(
        torch.from_numpy(clf.coef_[0]).float(),
        accuracy(logits[train], y[train]),
        accuracy(logits[test], y[test]),
    )


def interaction_scores(V: Tensor, minimal: Sequence[int]) -> Tensor:
    """``score_j = sum_{i in minimal} <v_i, v_j>`` for every feature (minimal ones set to -inf)."""
    scores = V @ V[list(minimal)].sum(0) if minimal else torch.zeros(V.shape[0])
    scores = scores.clone()
    scores[list(minimal)] = float("-inf")
    return scores


def top_ranked(scores: Tensor, k: int, exclude: Sequence[int] = ()) -> list[int]:
    """Indices of the ``k`` highest scores (ties by index), skipping ``exclude`` and -inf."""
    banned = set(exclude)
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return [i for i in order if i not in banned and float(scores[i]) != float("-inf")][:k]
