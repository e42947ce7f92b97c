"""KGAttentionConv under bf16 autocast (AMP): the relation-space projections come out of
autocast's matmuls in bfloat16 while ``tanh(W x + e_r)`` is float32; the hand-written autograd
Functions must accept the mixed dtypes (they failed in backward before). CPU autocast here; the
CUDA run is in ``tests/cuda/test_models_cuda.py``."""
from __future__ import annotations

import copy

import pytest
import torch

from kgseqgraph.nn.conv import KGAttentionConv


@pytest.mark.parametrize("recompute", [False, True])
def test_forward_backward_under_bf16_autocast(recompute):
    g = torch.Generator().manual_seed(0)
    N, E, R = 60, 400, 3
    ei = torch.stack([torch.randint(N, (E,), generator=g), torch.randint(N, (E,), generator=g)])
    et = torch.randint(R, (E,), generator=g)
    torch.manual_seed(0)
    conv = KGAttentionConv(16, 8, R, recompute_scores=recompute, negative_slope=1.0)
    ref = copy.deepcopy(conv)
    x0 = torch.randn(N, 16, generator=g)
    gout = torch.randn(N, 8, generator=g)

    def run(module, amp):
        x = x0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = module(x, ei, et)
        out.float().backward(gout)
        return out.float(), x.grad, module.rel_proj.grad

    got, want = run(conv, True), run(ref, False)
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cos > 0.99
