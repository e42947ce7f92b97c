r"""Decoding for generative recommenders: beam search (optionally constrained by a prefix trie),
the mapping of generated text to catalogue items, and ranked lists as scores for the evaluator.

Beam search (:func:`beam_search`) keeps :math:`K` running hypotheses per input. At each step
every running hypothesis :math:`y_{1..t}` is extended by every allowed token,
:math:`s(y_{1..t+1}) = s(y_{1..t}) + \log p(y_{t+1} \mid y_{1..t}, x)`, and the :math:`2K` best
extensions are read in order: one ending in a stop token (among the best :math:`K`) becomes a
finished hypothesis with score :math:`s / |y|^{\alpha}` (``length_penalty`` :math:`\alpha`, the
stop token counted), the others fill the next :math:`K` running beams — Hugging Face's
``BeamSearchScorer`` rule. A constrained search (:class:`PrefixTrie`) masks every token that does
not continue a valid sequence, so only catalogue items can be generated (KP4SR's item IDs).

Ranked lists as scores (:func:`ranked_list_scores`): a beam gives an ordered list of items
:math:`(j_1, \dots, j_R)`; the evaluator ranks ``[B, N]`` scores, so item :math:`j_r` gets
:math:`R - r + 1` (first occurrence wins) and every item outside the list :math:`-\infty`.
Under the evaluator's pessimistic ties an item outside the list ties with, and so ranks below,
every other unlisted item, so HR@k and NDCG@k equal the metrics computed on the list itself (its
first occurrences, minus any excluded history items) whenever more than :math:`k` items remain
after the exclusions — always, for a real catalogue.

Item mapping (LANCER Eq. 8–9, :func:`max_pooled_embeddings`): generated tokens
:math:`w_1 \dots w_m` become :math:`\mathbf{e} = \max_j \mathbf{E}[w_j]` (element-wise max of
the LM's input embeddings), the catalogue's texts likewise, and the generated text maps to the
item of highest cosine similarity.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PrefixTrie", "BeamResult", "beam_search", "ranked_list_scores",
           "max_pooled_embeddings", "map_to_items", "ListMemo"]

StepFn = Callable[[Tensor | None, Tensor | None], Tensor]


class PrefixTrie:
    """The valid token sequences (e.g. each catalogue item's ID tokens and end-of-sequence) as a
    trie: :meth:`allowed` masks the next tokens that continue a valid sequence, :meth:`lookup`
    maps a complete sequence back to its index (the first sequence wins when two coincide)."""

    def __init__(self, sequences: Sequence[Sequence[int]], vocab_size: int) -> None:
        self.vocab_size = int(vocab_size)
        self._next: dict[tuple[int, ...], list[int]] = {}
        self._index: dict[tuple[int, ...], int] = {}
        self.max_length = 0
        for i, seq in enumerate(sequences):
            seq = tuple(int(t) for t in seq)
            if not seq or max(seq) >= vocab_size or min(seq) < 0:
                raise ValueError(f"sequence {i} is empty or has tokens outside the vocabulary")
            for t in range(len(seq)):
                nxt = self._next.setdefault(seq[:t], [])
                if seq[t] not in nxt:
                    nxt.append(seq[t])
            self._index.setdefault(seq, i)
            self.max_length = max(self.max_length, len(seq))

    def allowed(self, prefixes: Tensor) -> Tensor:
        """``[R, V]`` bool: the tokens that may follow each prefix (``[R, t]``)."""
        out = torch.zeros(prefixes.size(0), self.vocab_size, dtype=torch.bool)
        for r, p in enumerate(prefixes.tolist()):
            nxt = self._next.get(tuple(p))
            if nxt:
                out[r, nxt] = True
        return out.to(prefixes.device)

    def lookup(self, sequence: Sequence[int]) -> int:
        """Index of a complete sequence, ``-1`` when it is not one."""
        return self._index.get(tuple(int(t) for t in sequence), -1)


@dataclass
class BeamResult:
    """``tokens [B, R, L]`` (padded with ``-1``; the stop token included when one ended the
    hypothesis), ``scores [B, R]`` (length-normalised, best first, ``-inf`` for missing
    hypotheses) and ``lengths [B, R]``."""

    tokens: Tensor
    scores: Tensor
    lengths: Tensor

    def sequences(self, b: int, strip: Sequence[int] = ()) -> list[list[int]]:
        """The hypotheses of input ``b`` as token lists (``strip``: tokens removed)."""
        out = []
        for r in range(self.tokens.size(1)):
            if torch.isinf(self.scores[b, r]):
                continue
            toks = self.tokens[b, r, : int(self.lengths[b, r])].tolist()
            out.append([t for t in toks if t not in strip])
        return out


def beam_search(step: StepFn, batch_size: int, num_beams: int, max_steps: int,
                stop_ids: Sequence[int], allowed: Callable[[Tensor], Tensor] | None = None,
                num_return: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool = False) -> BeamResult:
    """Beam search over a step function (see the module docstring).

    Args:
        step: ``step(tokens, origin) -> log-probabilities [B·K, V]``. Rows are laid out
            ``b·K + j``. The first call gets ``(None, None)`` (score the prompt); later calls get
            the token each row just chose and ``origin``, the row of the previous step each new
            row extends (reorder any cache by it).
        batch_size / num_beams: :math:`B`, :math:`K`.
        max_steps: most generated tokens per hypothesis.
        stop_ids: tokens that end a hypothesis.
        allowed: ``allowed(tokens [B·K, t]) -> bool [B·K, V]`` (a constrained search).
        num_return: hypotheses returned per input (default :math:`K`).
        length_penalty: :math:`\\alpha`.
        early_stopping: stop an input once it has :math:`K` finished hypotheses.
    """
    B, K = int(batch_size), int(num_beams)
    R = K if num_return is None else int(num_return)
    if K < 1 or R < 1 or R > K or max_steps < 1:
        raise ValueError(f"need num_beams >= num_return >= 1 and max_steps >= 1, got {K}, {R}, "
                         f"{max_steps}")
    stops = set(int(s) for s in stop_ids)
    beam_scores = torch.zeros(B, K, dtype=torch.float64)
    beam_scores[:, 1:] = float("-inf")            # identical beams at the start: expand one
    tokens = torch.zeros(B * K, 0, dtype=torch.long)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    logp = step(None, None)
    for t in range(max_steps):
        if allowed is not None:
            logp = logp.masked_fill(~allowed(tokens).to(logp.device), float("-inf"))
        # the best 2K extensions of all beams are among the best 2K of each beam
        row_s, row_i = torch.topk(logp.float(), min(2 * K, logp.size(1)), dim=1)
        W = row_s.size(1)
        cand = (beam_scores.view(-1, 1) + row_s.double().cpu()).view(B, K * W)
        top_s, top_i = torch.topk(cand, min(2 * K, K * W), dim=1)
        row_i = row_i.cpu().view(B, K * W)
        new_scores = torch.full((B, K), float("-inf"), dtype=torch.float64)
        new_origin = torch.arange(B * K).view(B, K) // K * K   # dead beams: any row of b
        new_tok = torch.zeros(B, K, dtype=torch.long)
        for b in range(B):
            if done[b]:
                continue
            n, ri = 0, row_i[b].tolist()
            for rank, (s, i) in enumerate(zip(top_s[b].tolist(), top_i[b].tolist())):
                if s == float("-inf") or n == K:
                    break
                j, tok = i // W, ri[i]
                if tok in stops:
                    if rank < K:
                        seq = tokens[b * K + j].tolist() + [tok]
                        _add(finished[b], s / len(seq) ** length_penalty, seq, K)
                    continue
                new_scores[b, n], new_origin[b, n], new_tok[b, n] = s, b * K + j, tok
                n += 1
            best = float(new_scores[b, 0])
            if len(finished[b]) >= K and (early_stopping or best == float("-inf") or
                                          finished[b][-1][0] >= best / (t + 1) ** length_penalty):
                done[b] = True
            elif best == float("-inf"):
                done[b] = True
        origin = new_origin.view(-1)
        tokens = torch.cat([tokens[origin], new_tok.view(-1, 1)], 1)
        beam_scores = new_scores.masked_fill(torch.tensor(done).view(B, 1), float("-inf"))
        if all(done) or t == max_steps - 1:
            break
        logp = step(new_tok.view(-1), origin)
    for b in range(B):           # unfinished beams count at max_steps (Hugging Face's finalize)
        for j in range(K):
            s = float(beam_scores[b, j])
            if s > float("-inf"):
                _add(finished[b], s / tokens.size(1) ** length_penalty,
                     tokens[b * K + j].tolist(), K)
    L = max([len(seq) for hyps in finished for _, seq in hyps] + [1])
    out_tok = torch.full((B, R, L), -1, dtype=torch.long)
    out_s = torch.full((B, R), float("-inf"))
    out_len = torch.zeros(B, R, dtype=torch.long)
    for b, hyps in enumerate(finished):
        for r, (s, seq) in enumerate(hyps[:R]):
            out_tok[b, r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            out_s[b, r], out_len[b, r] = s, len(seq)
    return BeamResult(out_tok, out_s, out_len)


def _add(hyps: list[tuple[float, list[int]]], score: float, seq: list[int], k: int) -> None:
    """Insert into a best-first list kept at ``k`` entries (stable for equal scores)."""
    pos = len(hyps)
    while pos > 0 and hyps[pos - 1][0] < score:
        pos -= 1
    hyps.insert(pos, (score, seq))
    del hyps[k:]


def ranked_list_scores(items: Tensor, num_items: int) -> Tensor:
    """``[B, N]`` scores of ranked lists ``items [B, R]`` (``-1``: no item): the :math:`r`-th
    item gets :math:`R - r + 1` at its first occurrence, every other item :math:`-\\infty`."""
    B, R = items.shape
    scores = torch.full((B, num_items), float("-inf"))
    for r in range(R - 1, -1, -1):             # later ranks first, so first occurrences win
        col = items[:, r]
        ok = col >= 0
        scores[ok.nonzero().view(-1), col[ok]] = float(R - r)
    return scores


def max_pooled_embeddings(ids: Tensor, mask: Tensor, table: Tensor) -> Tensor:
    r"""LANCER Eq. 8: element-wise max over the real tokens' embeddings,
    :math:`\mathbf{e} = \max_{j:\,m_j=1} \mathbf{E}[w_j]` (``[..., T]`` → ``[..., D]``; rows
    without a real token give zeros)."""
    emb = F.embedding(ids.clamp(min=0), table).masked_fill(~mask.unsqueeze(-1), float("-inf"))
    out = emb.amax(dim=-2)
    return torch.where(mask.any(-1, keepdim=True), out, torch.zeros_like(out))


def map_to_items(generated: Tensor, generated_mask: Tensor, item_embeddings: Tensor,
                 table: Tensor) -> Tensor:
    r"""LANCER Eq. 9: the item whose pooled text embedding is most cosine-similar to each
    generated text's (``[M, T]`` tokens → ``[M]`` items; ``-1`` for an empty generation)."""
    q = max_pooled_embeddings(generated, generated_mask, table)
    sims = F.normalize(q, dim=-1) @ F.normalize(item_embeddings, dim=-1).t()
    return torch.where(generated_mask.any(-1), sims.argmax(-1), torch.full_like(sims[:, 0], -1,
                                                                                  dtype=torch.long))


class ListMemo:
    """Generated lists of inputs already scored since the last :meth:`clear` — the Evaluator
    scores every user twice (full ranking, then the sampled protocol), and a beam search is the
    expensive part. A model clears it whenever its weights or mode may have changed
    (``train()``/``eval()``, ``load_state_dict``)."""

    def __init__(self) -> None:
        self._lists: dict[str, Tensor] = {}

    def clear(self) -> None:
        self._lists.clear()

    def __call__(self, key_tensors: Sequence[Tensor], generate: Callable[[], Tensor]) -> Tensor:
        import hashlib

        h = hashlib.sha1()
        for t in key_tensors:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        key = h.hexdigest()
        if key not in self._lists:
            self._lists[key] = generate()
        return self._lists[key]
