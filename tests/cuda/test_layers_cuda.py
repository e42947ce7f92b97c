"""The KG layers on CUDA against a float64 CPU reference: :class:`KGAttentionConv` with every
attention backend (Triton via ``auto``, the gather-free torch path, PyG's ``propagate``, the
recomputing variant, precomputed weights) and :class:`KGEnricher` (per-layer and reused
attention), outputs and every gradient.

The aggregators' LeakyReLU has a kink at 0: a pre-activation within float32 rounding of 0 takes
the other slope on the other device and its gradient changes by ``(1 - slope)`` times its
upstream gradient — a legitimate difference, not a bug. The gradient checks therefore run with
``negative_slope=1`` (no kink); the forward checks use KGAT's 0.2.
"""
from __future__ import annotations

import copy

import pytest
import torch
from cudatest import assert_close_scaled, on_cpu, size

from kgseqgraph.data import relational_view
from kgseqgraph.datasets.synthetic import make_synthetic
from kgseqgraph.nn import KGEnricher
from kgseqgraph.nn.conv import KGAttentionConv

pytestmark = pytest.mark.cuda

F32 = torch.float32


def random_kg(num_nodes: int, num_edges: int, num_relations: int, seed: int = 0):
    """Random typed edges (tail -> head) in random order, some nodes without edges."""
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(num_nodes - 5, (num_edges,), generator=g)  # the last 5: no edges
    tail = torch.randint(num_nodes, (num_edges,), generator=g)
    rel = torch.randint(num_relations, (num_edges,), generator=g)
    return torch.stack([tail, head]), rel


def sorted_by_head(edge_index, edge_type, num_nodes):
    order = torch.argsort(edge_index[1], stable=True)
    ei, et = edge_index[:, order], edge_type[order]
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(ei[1], minlength=num_nodes), 0, out=ptr[1:])
    return ei, et, ptr


def conv_run(conv, x, edge_index, edge_type, grad_out, ptr=None, attention_weights=None):
    """Forward + backward; returns (out, alpha, grads by name)."""
    conv.zero_grad(set_to_none=True)
    xx = x.detach().clone().requires_grad_()
    res = conv(xx, edge_index, edge_type, ptr=ptr, attention_weights=attention_weights,
               return_attention_weights=True)
    out, (_, alpha) = res
    out.backward(grad_out)
    grads = {"x": xx.grad}
    grads.update({n: p.grad for n, p in conv.named_parameters() if p.grad is not None})
    return out.detach(), alpha.detach(), grads


#: (backend, recompute_scores); on CUDA "auto" is the Triton kernels
CONV_PATHS = [("auto", False), ("torch", False), ("pyg", False), ("auto", True),
              ("triton", False)]


@pytest.mark.parametrize("backend, recompute", CONV_PATHS,
                         ids=[b + ("+recompute" if r else "") for b, r in CONV_PATHS])
@pytest.mark.parametrize("edge_order", ["sorted", "shuffled"])
@pytest.mark.parametrize("slope", [0.2, 1.0])
def test_kg_attention_conv_matches_cpu_float64(device, backend, recompute, edge_order, slope):
    N, E, R, d_in, d_out = size(20_000, 600), size(300_000, 6_000), 8, 32, 16
    ei, et = random_kg(N, E, R)
    ptr = None
    if edge_order == "sorted":
        ei, et, ptr = sorted_by_head(ei, et, N)
    torch.manual_seed(0)
    ref_conv = KGAttentionConv(d_in, d_out, R, backend="torch", negative_slope=slope).double()
    conv = copy.deepcopy(ref_conv).to(device, F32)
    conv.backend, conv.recompute_scores = backend, recompute
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, d_in, generator=g)
    gout = torch.randn(N, d_out, generator=g)
    want = conv_run(ref_conv, x.double(), ei, et, gout.double(), ptr)
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    got = conv_run(conv, x.to(device), ei.to(device), et.to(device), gout.to(device), to(ptr))
    assert got[0].device.type == device.type
    assert_close_scaled(got[0], want[0], F32, f"{backend} out")
    assert_close_scaled(got[1], want[1], F32, f"{backend} alpha")
    if slope != 1.0:
        return  # gradients: see the module docstring
    assert got[2].keys() == want[2].keys()
    for name in want[2]:
        assert_close_scaled(got[2][name], want[2][name], F32, f"{backend} grad {name}")


def test_kg_attention_conv_with_precomputed_weights(device):
    """``attention_weights=``: the gather-free ``segment_weighted_sum`` on the device."""
    N, E, R = size(20_000, 600), size(300_000, 6_000), 4
    ei, et = random_kg(N, E, R, seed=2)
    torch.manual_seed(0)
    ref_conv = KGAttentionConv(16, 16, None, use_attention=True, negative_slope=1.0).double()
    conv = copy.deepcopy(ref_conv).to(device, F32)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, 16, generator=g)
    alpha = torch.rand(E, generator=g)
    gout = torch.randn(N, 16, generator=g)
    want = conv_run(ref_conv, x.double(), ei, et, gout.double(), attention_weights=alpha.double())
    got = conv_run(conv, x.to(device), ei.to(device), et.to(device), gout.to(device),
                   attention_weights=alpha.to(device))
    assert_close_scaled(got[0], want[0], F32, "out")
    for name in want[2]:
        assert_close_scaled(got[2][name], want[2][name], F32, f"grad {name}")


@pytest.fixture(scope="module")
def synthetic_kg():
    return make_synthetic(num_users=size(3000, 200), num_items=size(2000, 150),
                          num_entities=size(400, 40), num_relations=5, seq_len=10, seed=0)


@pytest.mark.parametrize("reuse_attention", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
def test_kg_enricher_matches_cpu_float64(device, synthetic_kg, reuse_attention, recompute):
    torch.manual_seed(0)
    ref = KGEnricher(synthetic_kg, in_channels=32, hidden_channels=(16, 8, 8), dropout=0.0,
                     reuse_attention=reuse_attention, negative_slope=1.0,
                     recompute_scores=recompute).double()
    enr = copy.deepcopy(ref).to(device, F32)
    assert enr.edge_index.device.type == device.type  # the graph buffers moved too
    g = torch.Generator().manual_seed(4)
    items = torch.randn(enr.num_items, 32, generator=g)
    grad = torch.randn(enr.num_items, enr.out_channels, generator=g)

    def go(module, dev, dtype):
        module.zero_grad(set_to_none=True)
        it = items.to(dev, dtype, copy=True).requires_grad_()
        z = module(it)
        z.backward(grad.to(dev, dtype))
        grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
        return z.detach(), it.grad, grads

    want = go(ref, "cpu", torch.float64)
    got = go(enr, device, F32)
    assert_close_scaled(got[0], want[0], F32, "enriched embeddings")
    assert_close_scaled(got[1], want[1], F32, "grad item embeddings")
    assert got[2].keys() == want[2].keys()
    for name in want[2]:
        assert_close_scaled(got[2][name], want[2][name], F32, f"grad {name}")


@pytest.mark.realdata
def test_kg_enricher_on_the_ml100k_kg(device):
    """The real ML-100K item-entity KG (Freebase, 24 relations and reverses)."""
    from kgseqgraph.testing import require_data

    if on_cpu():
        pytest.skip("CPU mode: the ML-100K KG is too large for the Triton interpreter")
    root = require_data("ml-100k/ml-100k.kg").parent
    from kgseqgraph.datasets.registry import load_dataset

    data = load_dataset("ml-100k", root)
    view = relational_view(data)
    torch.manual_seed(0)
    ref = KGEnricher(view, in_channels=64, hidden_channels=(32, 16, 16), dropout=0.0,
                     negative_slope=1.0).double()
    enr = copy.deepcopy(ref).to(device, F32)
    ref_z, z = ref(), enr()
    assert_close_scaled(z, ref_z, F32, "ML-100K enriched embeddings")
    g = torch.Generator().manual_seed(5)
    grad = torch.randn(z.shape, generator=g)
    ref_z.backward(grad.double())
    z.backward(grad.to(device))
    for (name, p), (_, q) in zip(ref.named_parameters(), enr.named_parameters()):
        if p.grad is not None:
            assert_close_scaled(q.grad, p.grad, F32, f"ML-100K grad {name}")
