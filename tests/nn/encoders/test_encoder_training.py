"""Each encoder, with an item table and a linear head, learns a toy pattern in 60 steps.

Sequences are arithmetic progressions modulo V with a per-row step of 1 or 2, left-padded to
random lengths: the next item needs two items of context (the step), so an encoder that ignored
the sequence would stay near ln(2) on top of the unavoidable first-position uncertainty.
Causal encoders predict the next item at every position; bidirectional ones fill masked
positions (cloze).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn


V, L, B = 12, 8, 64
PAD, MASK_ID = V, V + 1


def _toy_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    start = torch.randint(0, V, (B, 1), generator=gen)
    step = torch.randint(1, 3, (B, 1), generator=gen)
    items = (start + step * torch.arange(L)) % V
    lengths = torch.randint(3, L + 1, (B,), generator=gen)
    mask = torch.arange(L) >= (L - lengths)[:, None]  # left padding
    # left-pad: shift the first `length` items of each progression to the end of the row
    idx = (torch.arange(L) - (L - lengths)[:, None]).clamp(min=0)
    items = torch.where(mask, items.gather(1, idx), torch.full_like(items, PAD))
    return items, mask


def _loss(encoder, emb, head, items, mask, hide) -> torch.Tensor:
    if encoder.is_causal:
        out = encoder(emb(items), mask)
        logits = head(out[:, :-1])
        target = items[:, 1:].masked_fill(~(mask[:, :-1] & mask[:, 1:]), -100)
        return F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), ignore_index=-100)
    inputs = items.masked_fill(hide, MASK_ID)
    out = encoder(emb(inputs), mask)
    target = items.masked_fill(~hide, -100)
    return F.cross_entropy(head(out).reshape(-1, V), target.reshape(-1), ignore_index=-100)


@pytest.mark.parametrize("name", ["sasrec", "sasrec_recbole", "bert4rec", "gru4rec", "hf_t5_proj",
                                  "hf_gpt2_proj", "hf_llama_proj"])
def test_overfits_toy_pattern(encoder_builder, name: str) -> None:
    encoder = encoder_builder(name, 0).eval()  # overfitting: dropout off
    D = encoder.hidden_size
    torch.manual_seed(0)
    emb = nn.Embedding(V + 2, D)
    head = nn.Linear(D, V)
    params = list(encoder.parameters()) + list(emb.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    items, mask = _toy_batch(gen)
    hide = (torch.rand(items.shape, generator=gen) < 0.3) & mask
    hide[:, -1] = True  # at least one cloze target per row
    losses = []
    for _ in range(60):
        loss = _loss(encoder, emb, head, items, mask, hide)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = losses[0], sum(losses[-5:]) / 5
    assert math.isfinite(last)
    assert first > 0.8 * math.log(V)
    assert last < 0.5 * first, f"{name}: loss {first:.3f} -> {last:.3f}"
