r"""Tie-safe ranking metrics for next-item recommendation with one relevant item per user.

Every metric is a function of the target's *rank*, and the rank is obtained by counting, not by
sorting: for user :math:`u` with scores :math:`s_{u,1..N}`, target :math:`y_u` and a set
:math:`E_u` of excluded items (the user's history, never containing the target),

.. math::
    g_u = \big|\{j \notin E_u : s_{u,j} > s_{u,y_u}\}\big|, \qquad
    t_u = \big|\{j \notin E_u,\ j \ne y_u : s_{u,j} = s_{u,y_u}\}\big| .

:math:`g_u` items beat the target and :math:`t_u` other items tie with it; the target can end up
at any rank in :math:`[g_u + 1,\ g_u + t_u + 1]`. The tie rule picks the rank:

* ``"pessimistic"`` (default): :math:`r_u = g_u + t_u + 1` — every tie is lost, so a constant
  scorer gets rank :math:`N` and :math:`\mathrm{HR@}k \approx 0`;
* ``"optimistic"``: :math:`r_u = g_u + 1` (for comparison only; it rewards degenerate scorers);
* ``"expected"``: the *expected metric* under a uniformly random order of the tied items,

  .. math::
      \mathbb{E}[m] = \frac{1}{t_u + 1} \sum_{r = g_u + 1}^{g_u + t_u + 1} m(r),

  computed exactly (not :math:`m` at the mean rank, which differs for every non-linear
  :math:`m`). A constant scorer gets :math:`\mathrm{HR@}k = k / N`.

With one relevant item, the metrics at rank :math:`r` are

.. math::
    \mathrm{HR@}k = [r \le k] \;(= \mathrm{Recall@}k = \mathrm{Success@}k), \qquad
    \mathrm{NDCG@}k = \frac{[r \le k]}{\log_2(r + 1)}, \qquad
    \mathrm{MAP@}k = \mathrm{MRR@}k = \frac{[r \le k]}{r}, \qquad
    \mathrm{MRR} = \frac{1}{r},

and results are means over users. The sums in the expected rule use prefix tables
:math:`D(m) = \sum_{r \le m} 1/\log_2(r+1)` and :math:`H(m) = \sum_{r \le m} 1/r` (the untruncated
:math:`H` through :math:`\psi(m + 1) + \gamma` in float64), e.g.
:math:`\mathbb{E}[\mathrm{HR@}k] = (\min(k, g+t+1) - \min(k, g)) / (t + 1)`.

Exclusion. ``exclude`` removes items from user :math:`u`'s candidate list (typically the items
already in the input sequence). The target is never excluded, even when it appears in ``exclude``
(repeat consumption happens: the user may legitimately re-buy an item). Excluded items are dropped
from the *counts* :math:`g_u, t_u`, so they can never outrank or tie the target whatever their
score — no ``-inf`` masking, which would create ties with a ``-inf`` target.

Cost: two comparison passes over ``scores`` (``>`` and ``>=`` written into a reused float buffer
of at most :math:`2^{20}` elements and summed), no sort or top-k; the excluded items are then
re-compared one by one (:math:`O(\mathrm{nnz}\log\mathrm{nnz})`) and subtracted from the counts.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_KS",
    "TIE_RULES",
    "RankCounts",
    "Exclusion",
    "rank_counts",
    "ranks_from_counts",
    "ranks_from_scores",
    "metrics_from_counts",
    "evaluate_scores",
]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)
TIE_RULES: tuple[str, ...] = ("pessimistic", "optimistic", "expected")
TieRule = Literal["pessimistic", "optimistic", "expected"]
ExcludeLike = Union[None, Tensor, "tuple[Tensor, Tensor]", "list[Tensor]", Any]

_EULER_GAMMA = 0.57721566490153286060651209008240243


# ----------------------------------------------------------------------------------------------
# exclusion sets
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exclusion:
    """Per-user excluded items, normalised to CSR (``ptr [B + 1]``, ``idx [nnz]``) or a bool mask.

    Build one with :meth:`from_any`. Accepted inputs (for ``B`` users, ``N`` items):

    * ``None`` — nothing excluded;
    * a ``tuple`` ``(ptr, idx)`` — CSR: user ``u`` excludes ``idx[ptr[u]:ptr[u + 1]]``;
    * a ``list`` of ``B`` 1-D integer tensors (or lists) — one per user;
    * an object with ``.ptr`` and ``.items`` (e.g. :class:`kgseqgraph.data.Sequences`) — CSR;
    * a bool tensor ``[B, N]`` — ``True`` marks an excluded item.

    A ``tuple`` is always read as a CSR pair and a ``list`` always as per-user tensors, so a
    two-user list is never mistaken for CSR. Duplicated items are allowed (they count once).
    """

    ptr: Tensor | None = None
    idx: Tensor | None = None
    mask: Tensor | None = None

    @staticmethod
    def from_any(exclude: ExcludeLike, num_users: int, num_items: int) -> Exclusion | None:
        if exclude is None:
            return None
        if isinstance(exclude, Exclusion):
            ex = exclude
        elif isinstance(exclude, Tensor):
            if exclude.dtype != torch.bool or exclude.dim() != 2:
                raise ValueError("a tensor `exclude` must be a bool mask [B, N]; got "
                                 f"dtype {exclude.dtype} and shape {tuple(exclude.shape)}")
            ex = Exclusion(mask=exclude)
        elif isinstance(exclude, tuple):
            if len(exclude) != 2:
                raise ValueError("a tuple `exclude` must be a CSR pair (ptr[B + 1], idx[nnz]); "
                                 f"got a tuple of length {len(exclude)} (use a list for per-user "
                                 "tensors)")
            ex = Exclusion(ptr=torch.as_tensor(exclude[0]), idx=torch.as_tensor(exclude[1]))
        elif isinstance(exclude, list):
            rows = [torch.as_tensor(x, dtype=torch.long).reshape(-1) for x in exclude]
            if len(rows) != num_users:
                raise ValueError(f"`exclude` list has {len(rows)} entries for {num_users} users")
            lengths = torch.tensor([r.numel() for r in rows], dtype=torch.long)
            ptr = torch.zeros(num_users + 1, dtype=torch.long)
            ptr[1:] = lengths.cumsum(0)
            idx = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
            ex = Exclusion(ptr=ptr, idx=idx)
        elif hasattr(exclude, "ptr") and hasattr(exclude, "items"):
            ex = Exclusion(ptr=exclude.ptr, idx=exclude.items)
        else:
            raise ValueError("`exclude` must be None, a CSR tuple (ptr, idx), a list of per-user "
                             "item tensors, an object with .ptr/.items, or a bool mask [B, N]; "
                             f"got {type(exclude).__name__}")
        ex._validate(num_users, num_items)
        return ex

    def _validate(self, num_users: int, num_items: int) -> None:
        if self.mask is not None:
            if tuple(self.mask.shape) != (num_users, num_items):
                raise ValueError(f"`exclude` mask has shape {tuple(self.mask.shape)}, expected "
                                 f"({num_users}, {num_items})")
            return
        ptr, idx = self.ptr, self.idx
        if ptr.dim() != 1 or ptr.numel() != num_users + 1:
            raise ValueError(f"`exclude` ptr must have B + 1 = {num_users + 1} entries, got "
                             f"shape {tuple(ptr.shape)}")
        if ptr.dtype.is_floating_point or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError("`exclude` ptr and idx must be integer tensors")
        if idx.dim() != 1:
            raise ValueError(f"`exclude` idx must be 1-D, got shape {tuple(idx.shape)}")
        if int(ptr[0]) != 0 or int(ptr[-1]) != idx.numel():
            raise ValueError(f"`exclude` ptr must start at 0 and end at nnz = {idx.numel()}; got "
                             f"{int(ptr[0])} … {int(ptr[-1])}")
        if num_users and bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError("`exclude` ptr must be non-decreasing")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_items):
            raise ValueError(f"`exclude` item ids must lie in [0, {num_items}); got "
                             f"[{int(idx.min())}, {int(idx.max())}]")

    def slice(self, start: int, end: int) -> Exclusion:
        """The exclusion sets of users ``start … end - 1``."""
        if self.mask is not None:
            return Exclusion(mask=self.mask[start:end])
        lo, hi = int(self.ptr[start]), int(self.ptr[end])
        return Exclusion(ptr=self.ptr[start:end + 1] - lo, idx=self.idx[lo:hi])

    def pairs(self, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """``(row, item)`` long tensors of every excluded entry (duplicates kept)."""
        if self.mask is not None:
            row, item = self.mask.nonzero(as_tuple=True)
        else:
            counts = (self.ptr[1:] - self.ptr[:-1]).long()
            row = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device),
                                          counts)
            item = self.idx.long()
        if device is not None:
            row, item = row.to(device), item.to(device)
        return row, item


# ----------------------------------------------------------------------------------------------
# rank counts
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankCounts:
    r"""Per-user counts that determine the target's rank under every tie rule.

    Attributes:
        greater: ``[B]`` int64, :math:`g_u`, non-excluded items scoring strictly above the target.
        ties: ``[B]`` int64, :math:`t_u`, non-excluded items other than the target scoring equal.
    """

    greater: Tensor
    ties: Tensor

    def __len__(self) -> int:
        return int(self.greater.numel())

    @staticmethod
    def cat(parts: Sequence[RankCounts]) -> RankCounts:
        return RankCounts(torch.cat([p.greater for p in parts]), torch.cat([p.ties for p in parts]))


def _unique_sorted(x: Tensor) -> Tensor:
    """Sorted distinct values of a 1-D tensor (a stable sort, which is much faster on CPU than
    :func:`torch.unique` when threads are contended)."""
    s = torch.sort(x, stable=True).values
    keep = torch.ones_like(s, dtype=torch.bool)
    keep[1:] = s[1:] != s[:-1]
    return s[keep]


def _check_scores_targets(scores: Tensor, targets: Tensor) -> Tensor:
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError("scores must be a 2-D tensor [B, N]; got "
                         f"{type(scores).__name__} {tuple(getattr(scores, 'shape', ()))}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise ValueError(f"scores must be real-valued, got dtype {scores.dtype}")
    targets = torch.as_tensor(targets)
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor, got dtype {targets.dtype}")
    if targets.dim() != 1 or targets.numel() != scores.size(0):
        raise ValueError(f"targets must have shape [B] = [{scores.size(0)}], got "
                         f"{tuple(targets.shape)}")
    n = scores.size(1)
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n):
        raise ValueError(f"targets must lie in [0, {n}) (the score columns); got "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    if scores.dtype.is_floating_point:
        bad = torch.isnan(scores.amax(dim=1))  # amax propagates NaN; no [B, N] temporary
        if bool(bad.any()):
            rows = bad.nonzero().view(-1)
            raise ValueError(f"scores contain NaN for {rows.numel()} user(s) (first rows: "
                             f"{rows[:5].tolist()}); a NaN score has no rank")
    return targets.to(device=scores.device, dtype=torch.long)


def rank_counts(scores: Tensor, targets: Tensor, exclude: ExcludeLike = None) -> RankCounts:
    r"""Count, for each user, the items beating and tying the target (see the module docstring).

    Args:
        scores: ``[B, N]`` scores of all items (higher is better); any real dtype, no NaN.
        targets: ``[B]`` target item of each user, in ``[0, N)``.
        exclude: items removed from each user's ranking (see :class:`Exclusion` for the accepted
            forms); the target is never removed.

    Returns:
        :class:`RankCounts` with ``[B]`` int64 tensors on ``scores.device``.
    """
    targets = _check_scores_targets(scores, targets)
    b, n = scores.shape
    ex = Exclusion.from_any(exclude, b, n)
    st = scores.gather(1, targets.view(-1, 1))
    greater, at_least = _compare_counts(scores, st)
    ties = at_least - greater - 1  # the target ties with itself
    if ex is not None:
        row, item = ex.pairs(scores.device)
        keep = item != targets[row]  # the target is never excluded
        key = _unique_sorted(row[keep] * n + item[keep])  # each excluded item counts once
        row, item = key // n, key % n
        s_ex = scores[row, item]
        s_t = st.view(-1)[row]
        greater -= torch.zeros_like(greater).index_add_(0, row, (s_ex > s_t).long())
        ties -= torch.zeros_like(ties).index_add_(0, row, (s_ex == s_t).long())
    return RankCounts(greater, ties)


_BLOCK_ELEMENTS = 1 << 20  # size of the comparison buffer


def _compare_counts(scores: Tensor, st: Tensor) -> tuple[Tensor, Tensor]:
    """``#(scores > st)`` and ``#(scores >= st)`` per row, as int64.

    The exact comparisons are written into a reused float buffer (``torch.gt(..., out=buf)``) and
    summed there: summing a float ``[rows, N]`` block is several times faster on CPU than
    summing a bool one, and the sums of 0/1 values are exact (float32 up to ``N = 2**24``, float64
    beyond). Rows are processed in blocks of ``_BLOCK_ELEMENTS`` elements, so the buffer stays
    small whatever the chunk size.
    """
    b, n = scores.shape
    dtype = torch.float32 if n <= (1 << 24) else torch.float64
    rows = max(1, min(b, _BLOCK_ELEMENTS // max(n, 1)))
    buf = torch.empty(rows, n, dtype=dtype, device=scores.device)
    greater = torch.empty(b, dtype=torch.long, device=scores.device)
    at_least = torch.empty(b, dtype=torch.long, device=scores.device)
    for start in range(0, b, rows):
        end = min(start + rows, b)
        out = buf[: end - start]
        s, t = scores[start:end], st[start:end]
        torch.gt(s, t, out=out)
        greater[start:end] = out.sum(1)
        torch.ge(s, t, out=out)
        at_least[start:end] = out.sum(1)
    return greater, at_least


def _check_ties(ties: str) -> str:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    return ties


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    if isinstance(ks, int):
        ks = (ks,)
    out: list[int] = []
    for k in ks:
        if isinstance(k, bool) or int(k) != k or int(k) < 1:
            raise ValueError(f"every cut-off k must be a positive integer, got {k!r}")
        if int(k) not in out:
            out.append(int(k))
    if not out:
        raise ValueError("ks must hold at least one cut-off")
    return tuple(out)


def ranks_from_counts(counts: RankCounts, ties: TieRule = "pessimistic") -> Tensor:
    """Rank of the target (1 = best) as float64 ``[B]``; ``"expected"`` gives the mean rank
    :math:`g + t/2 + 1` (metrics under ``"expected"`` are *not* taken at this rank)."""
    _check_ties(ties)
    g, t = counts.greater.double(), counts.ties.double()
    if ties == "pessimistic":
        return g + t + 1
    if ties == "optimistic":
        return g + 1
    return g + t / 2 + 1


def ranks_from_scores(scores: Tensor, targets: Tensor, exclude: ExcludeLike = None,
                      ties: TieRule = "pessimistic") -> Tensor:
    """Per-user rank of the target, float64 ``[B]`` (see :func:`ranks_from_counts`)."""
    return ranks_from_counts(rank_counts(scores, targets, exclude), ties)


# ----------------------------------------------------------------------------------------------
# metrics from counts
# ----------------------------------------------------------------------------------------------
def _harmonic(m: Tensor) -> Tensor:
    r""":math:`H(m) = \sum_{r=1}^m 1/r` in float64 via :math:`\psi(m+1) + \gamma` (``H(0) = 0``)."""
    m = m.double()
    return torch.where(m > 0, torch.digamma(m + 1) + _EULER_GAMMA, torch.zeros_like(m))


def _prefix_tables(max_k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``D[m] = sum_{r<=m} 1/log2(r+1)`` and ``H[m] = sum_{r<=m} 1/r`` for ``m = 0 … max_k``."""
    r = torch.arange(1, max_k + 1, dtype=torch.float64, device=device)
    zero = torch.zeros(1, dtype=torch.float64, device=device)
    disc = torch.cat([zero, torch.cumsum(1.0 / torch.log2(r + 1), 0)])
    harm = torch.cat([zero, torch.cumsum(1.0 / r, 0)])
    return disc, harm


def metrics_from_counts(counts: RankCounts, ks: Iterable[int] = DEFAULT_KS,
                        ties: TieRule = "pessimistic") -> dict[str, Tensor]:
    r"""Per-user metrics (float64 ``[B]`` tensors) from rank counts.

    Keys, in order: ``HR@k`` for each ``k``, then ``NDCG@k``, ``MAP@k``, ``MRR@k``, and ``MRR``
    (untruncated). See the module docstring for the formulas and the tie rules.
    """
    ks = _check_ks(ks)
    _check_ties(ties)
    g, t = counts.greater, counts.ties
    device = g.device
    if ties == "expected":
        lo, hi = g + 1, g + t + 1  # the target's rank is uniform on [lo, hi]
    elif ties == "pessimistic":
        lo = hi = g + t + 1
    else:
        lo = hi = g + 1
    single = lo == hi  # exact closed forms when the rank is known
    r = hi.double()
    cnt = (hi - lo + 1).double()
    disc, harm = _prefix_tables(max(ks), device)

    out: dict[str, Tensor] = {}
    per_k: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
    for k in ks:
        a = torch.clamp(lo - 1, max=k)  # ranks in (a, b] count towards the cut-off k
        b = torch.clamp(hi, max=k)
        within = (r <= k).double()
        hr = torch.where(single, within, (b - a).double() / cnt)
        ndcg = torch.where(single, within / torch.log2(r + 1), (disc[b] - disc[a]) / cnt)
        rr = torch.where(single, within / r, (harm[b] - harm[a]) / cnt)
        per_k[k] = (hr, ndcg, rr)
    for j, name in enumerate(("HR", "NDCG", "MAP")):
        for k in ks:
            out[f"{name}@{k}"] = per_k[k][j]
    for k in ks:
        out[f"MRR@{k}"] = per_k[k][2].clone()
    out["MRR"] = torch.where(single, 1.0 / r, (_harmonic(hi) - _harmonic(lo - 1)) / cnt)
    return out


def _mean(per_user: dict[str, Tensor]) -> dict[str, float]:
    return {key: float(v.mean()) for key, v in per_user.items()}


def evaluate_scores(scores: Tensor, targets: Tensor, ks: Iterable[int] = DEFAULT_KS,
                    exclude: ExcludeLike = None, ties: TieRule = "pessimistic",
                    return_per_user: bool = False,
                    ) -> dict[str, float] | tuple[dict[str, float], dict[str, Tensor]]:
    r"""Full-ranking metrics of a score matrix, averaged over users.

    Args:
        scores: ``[B, N]`` scores of every item for each user (higher is better), no NaN.
        targets: ``[B]`` held-out item of each user, in ``[0, N)``.
        ks: cut-offs.
        exclude: per-user items removed from the ranking (see :class:`Exclusion`); the target is
            never removed. ``None`` keeps every item (RecBole's behaviour).
        ties: ``"pessimistic"`` (default), ``"expected"`` or ``"optimistic"``.
        return_per_user: also return the per-user values.

    Returns:
        ``{"HR@k", "NDCG@k", "MAP@k", "MRR@k" for each k, "MRR"}`` as Python floats (means over
        users); with ``return_per_user=True`` a pair ``(means, per_user)`` where ``per_user``
        holds the same keys as float64 ``[B]`` tensors plus ``"rank"``
        (:func:`ranks_from_counts`).

    Example:
        >>> scores = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
        >>> evaluate_scores(scores, torch.tensor([1]), ks=(2,))["HR@2"]  # rank 3: tie lost
        0.0
    """
    if scores.dim() == 2 and scores.size(0) == 0:
        raise ValueError("scores has no users (B = 0); the mean of a metric over no users is "
                         "undefined")
    c = rank_counts(scores, targets, exclude)
    counts = RankCounts(c.greater.cpu(), c.ties.cpu())  # metrics on the CPU, as when streaming
    per_user = metrics_from_counts(counts, ks, ties)
    means = _mean(per_user)
    if return_per_user:
        per_user["rank"] = ranks_from_counts(counts, ties)
        return means, per_user
    return means
