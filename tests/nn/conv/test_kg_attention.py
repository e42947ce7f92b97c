import numpy as np
import pytest
import torch

from kgseqgraph.nn.conv import KGAttentionConv
from kgseqgraph.nn.kge import TransR

# The 5-node example: triples (head, relation, tail). Node 0 has three triples, node 1 one,
# node 2 one (pointing back at 0); nodes 3 and 4 are heads of nothing.
TRIPLES = [(0, 0, 1), (0, 1, 2), (0, 0, 3), (1, 1, 4), (2, 0, 0)]
X = np.array([[0.5, -1.0], [1.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [2.0, 0.5]])
W = np.array([[[1.0, 0.5], [0.0, 1.0]], [[0.5, 0.0], [-1.0, 1.0]]])  # W_r, applied as x @ W[r]
ER = np.array([[0.1, -0.2], [0.3, 0.0]])
W1 = np.array([[1.0, -0.5], [0.5, 1.0], [0.0, 2.0]])  # out = 3, in = 2
B1 = np.array([0.1, 0.0, -0.1])
W2 = np.array([[0.5, 0.5], [-1.0, 0.0], [1.0, 1.0]])
B2 = np.array([0.0, 0.2, 0.0])


def _edges(order=None):
    trip = TRIPLES if order is None else [TRIPLES[i] for i in order]
    h, r, t = (torch.tensor(c) for c in zip(*trip))
    return torch.stack([t, h]), r  # PyG source -> target: tail -> head


def _conv(aggregator="bi-interaction", backend="torch", **kw):
    conv = KGAttentionConv(2, 3, 2, aggregator=aggregator, backend=backend, **kw).double()
    with torch.no_grad():
        conv.rel_proj.copy_(torch.tensor(W))
        conv.rel_emb.copy_(torch.tensor(ER))
        if aggregator == "graphsage":
            conv.lin1.weight.copy_(torch.tensor(np.concatenate([W1, W2], 1)))
            conv.lin1.bias.copy_(torch.tensor(B1))
        else:
            conv.lin1.weight.copy_(torch.tensor(W1))
            conv.lin1.bias.copy_(torch.tensor(B1))
        if aggregator == "bi-interaction":
            conv.lin2.weight.copy_(torch.tensor(W2))
            conv.lin2.bias.copy_(torch.tensor(B2))
    return conv


def _reference(aggregator, slope=0.2):
    """Independent numpy evaluation of the KGAT equations, edge by edge."""
    pi = [(X[t] @ W[r]) @ np.tanh(X[h] @ W[r] + ER[r]) for h, r, t in TRIPLES]
    alpha = np.zeros(len(TRIPLES))
    neigh = np.zeros_like(X)
    for h in range(5):
        es = [e for e, (hh, _, _) in enumerate(TRIPLES) if hh == h]
        if not es:
            continue
        ex = np.exp([pi[e] for e in es])
        for e, a in zip(es, ex / ex.sum()):
            alpha[e] = a
            neigh[h] += a * X[TRIPLES[e][2]]
    lrelu = lambda v: np.where(v > 0, v, slope * v)  # noqa: E731
    if aggregator == "bi-interaction":
        out = lrelu((X + neigh) @ W1.T + B1) + lrelu((X * neigh) @ W2.T + B2)
    elif aggregator == "gcn":
        out = lrelu((X + neigh) @ W1.T + B1)
    else:
        out = lrelu(np.concatenate([X, neigh], 1) @ np.concatenate([W1, W2], 1).T + B1)
    return out, alpha, np.array(pi), neigh


def test_hand_values_of_the_first_head():
    # Node 0 by hand: relation 0 maps (a, b) -> (a, 0.5a + b); relation 1 -> (0.5a - b, b).
    # W_0 x_0 = (0.5, -0.75) + e_0 -> tanh(0.6, -0.95); tails: W_0 x_1 = (1, .5), W_0 x_3 = (-1, .5)
    # W_1 x_0 = (1.25, -1) + e_1 -> tanh(1.55, -1);     tail:  W_1 x_2 = (-2, 2)
    q0, q1 = np.tanh([0.6, -0.95]), np.tanh([1.55, -1.0])
    pi = [1.0 * q0[0] + 0.5 * q0[1], -2.0 * q1[0] + 2.0 * q1[1], -1.0 * q0[0] + 0.5 * q0[1]]
    _, alpha, ref_pi, neigh = _reference("gcn")
    np.testing.assert_allclose(ref_pi[:3], pi)
    conv = _conv("gcn")
    ei, et = _edges()
    out, (_, a) = conv(torch.tensor(X), ei, et, return_attention_weights=True)
    ex = np.exp(pi)
    np.testing.assert_allclose(a[:3].detach().numpy(), ex / ex.sum(), rtol=1e-12)
    np.testing.assert_allclose(neigh[0], (ex / ex.sum()) @ X[[1, 2, 3]])


@pytest.mark.parametrize("aggregator", ["bi-interaction", "gcn", "graphsage"])
@pytest.mark.parametrize("backend", ["torch", "pyg"])
def test_five_node_example(aggregator, backend):
    ref_out, ref_alpha, _, neigh = _reference(aggregator)
    conv = _conv(aggregator, backend)
    ei, et = _edges()
    out, (ei_out, alpha) = conv(torch.tensor(X), ei, et, return_attention_weights=True)
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(alpha.detach().numpy(), ref_alpha, rtol=1e-10)
    assert torch.equal(ei_out, ei)
    # direction: node 1 aggregates only its own triple (1, r1, 4), node 3 / 4 nothing
    assert ref_alpha[3] == 1.0 and np.allclose(neigh[1], X[4]) and not neigh[3:].any()


def test_unsorted_edges_and_ptr_give_the_same_result():
    x = torch.tensor(X)
    conv = _conv()
    ei, et = _edges()
    order = [3, 0, 4, 2, 1]  # heads 1, 0, 2, 0, 0
    ei2, et2 = _edges(order)
    out, (_, a) = conv(x, ei, et, return_attention_weights=True)
    out2, (e2, a2) = conv(x, ei2, et2, return_attention_weights=True)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(a2, a[order])  # weights come back in the caller's edge order
    assert torch.equal(e2, ei2)
    ptr = torch.tensor([0, 3, 4, 5, 5, 5])
    torch.testing.assert_close(conv(x, ei, et, ptr=ptr), out)
    with pytest.raises(ValueError, match="ptr"):
        conv(x, ei, et, ptr=torch.tensor([0, 5]))


def _random_graph(seed=0, N=40, E=200, R=3, F=8):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(N, (2, E), generator=g)
    et = torch.randint(R, (E,), generator=g)
    x = torch.randn(N, F, generator=g)
    return x, ei, et


@pytest.mark.parametrize("aggregator", ["bi-interaction", "gcn", "graphsage"])
def test_fused_and_pyg_paths_agree_with_gradients(aggregator):
    torch.manual_seed(0)
    x, ei, et = _random_graph()
    # float64, so that the two summation orders agree to ~1e-12 and a real bug cannot hide in
    # float32 rounding noise
    a = KGAttentionConv(8, 5, 3, aggregator=aggregator, backend="torch").double()
    b = KGAttentionConv(8, 5, 3, aggregator=aggregator, backend="pyg").double()
    b.load_state_dict(a.state_dict())
    xa, xb = x.double().requires_grad_(), x.double().requires_grad_()
    oa, (_, aa) = a(xa, ei, et, return_attention_weights=True)
    ob, (_, ab) = b(xb, ei, et, return_attention_weights=True)
    torch.testing.assert_close(oa, ob)
    torch.testing.assert_close(aa, ab)
    oa.pow(2).sum().backward()
    ob.pow(2).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)
    # every head's weights sum to one
    sums = torch.zeros(40, dtype=torch.float64).index_add_(0, ei[1], aa.detach())
    has = torch.bincount(ei[1], minlength=40) > 0
    torch.testing.assert_close(sums[has], torch.ones(int(has.sum()), dtype=torch.float64))


def test_gradients_reach_relation_parameters_through_attention():
    torch.manual_seed(0)
    x, ei, et = _random_graph()
    conv = KGAttentionConv(8, 4, 3)
    conv(x, ei, et).sum().backward()
    # W_r and e_r enter only through pi, so any gradient on them flowed through the attention
    assert conv.rel_proj.grad.abs().sum() > 0 and conv.rel_emb.grad.abs().sum() > 0
    assert all(conv.rel_proj.grad[r].abs().sum() > 0 for r in range(3))


def test_attention_changes_with_training():
    torch.manual_seed(0)
    x, ei, et = _random_graph()
    target = torch.randn(40, 4)
    conv = KGAttentionConv(8, 4, 3)
    _, (_, before) = conv(x, ei, et, return_attention_weights=True)
    opt = torch.optim.Adam(conv.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        (conv(x, ei, et) - target).pow(2).mean().backward()
        opt.step()
    _, (_, after) = conv(x, ei, et, return_attention_weights=True)
    assert (after - before).abs().max() > 1e-2


def test_cached_plan_is_reused_and_refreshed():
    torch.manual_seed(0)
    x, ei, et = _random_graph()
    conv = KGAttentionConv(8, 4, 3, cached=True)
    ref = KGAttentionConv(8, 4, 3)
    ref.load_state_dict(conv.state_dict())
    torch.testing.assert_close(conv(x, ei, et), ref(x, ei, et))
    plan = conv._cached_plan[1]
    conv(x, ei, et)
    assert conv._cached_plan[1] is plan  # same tensors: no re-planning
    ei2 = ei.flip(0).contiguous()
    torch.testing.assert_close(conv(x, ei2, et), ref(x, ei2, et))  # new graph: new plan
    assert conv._cached_plan[1] is not plan and "cached=True" in repr(conv)


def test_shared_transr_parameters():
    torch.manual_seed(0)
    x, ei, et = _random_graph()
    kge = TransR(40, 3, 8, 6)
    shared = KGAttentionConv(8, 4, None, relation_dim=6)
    own = KGAttentionConv(8, 4, 3, relation_dim=6)
    own.load_state_dict({**shared.state_dict(), "rel_emb": kge.rel_emb.weight.detach(),
                         "rel_proj": kge.rel_proj.detach()})
    out = shared(x, ei, et, rel_emb=kge.rel_emb.weight, rel_proj=kge.rel_proj)
    torch.testing.assert_close(out, own(x, ei, et))
    out.sum().backward()
    assert kge.rel_proj.grad.abs().sum() > 0
    assert shared.rel_proj is None and "shared relations" in repr(shared)
    with pytest.raises(ValueError, match="num_relations=None"):
        shared(x, ei, et)
    with pytest.raises(ValueError, match="both"):
        own(x, ei, et, rel_emb=kge.rel_emb.weight)


def test_precomputed_attention_and_no_attention():
    torch.manual_seed(0)
    x, ei, et = _random_graph()
    conv = KGAttentionConv(8, 4, 3, aggregator="gcn")
    out, (_, alpha) = conv(x, ei, et, return_attention_weights=True)
    torch.testing.assert_close(conv(x, ei, et, attention_weights=alpha), out)
    mean = KGAttentionConv(8, 4, 3, aggregator="gcn", use_attention=False)
    assert mean.rel_proj is None
    mean.lin1.load_state_dict(conv.lin1.state_dict())
    deg = torch.bincount(ei[1], minlength=40).clamp(min=1).unsqueeze(-1)
    neigh = torch.zeros(40, 8).index_add_(0, ei[1], x[ei[0]]) / deg
    ref = torch.nn.functional.leaky_relu(conv.lin1(x + neigh), 0.2)
    torch.testing.assert_close(mean(x, ei, et), ref)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    x, ei, et = _random_graph()
    conv = KGAttentionConv(8, 16, 3, dropout=0.5)
    conv.eval()
    a, b = conv(x, ei, et), conv(x, ei, et)
    assert torch.equal(a, b)
    conv.train()
    c = conv(x, ei, et)
    assert not torch.equal(a, c)
    kept = c != 0
    torch.testing.assert_close(c[kept], 2 * a[kept])  # inverted dropout scales survivors by 1/(1-p)


def test_reset_parameters_shapes_and_repr():
    conv = KGAttentionConv(8, 4, 3, relation_dim=5, aggregator="graphsage")
    assert conv.rel_proj.shape == (3, 8, 5) and conv.rel_emb.shape == (3, 5)
    assert conv.lin1.weight.shape == (4, 16) and conv.lin2 is None
    before = [p.detach().clone() for p in conv.parameters()]
    conv.reset_parameters()
    assert all(not torch.equal(p, q) for p, q in zip(before, conv.parameters()) if p.dim() > 1)
    assert repr(conv) == ("KGAttentionConv(8, 4, num_relations=3, relation_dim=5, "
                          "aggregator='graphsage', attention=True, dropout=0.0, backend='auto')")
    x, ei, et = _random_graph()
    assert conv(x, ei, et).shape == (40, 4)
    assert conv(x, ei[:, :0], et[:0]).shape == (40, 4)  # no edges: e_N = 0


def test_bad_input():
    x, ei, et = _random_graph()
    conv = KGAttentionConv(8, 4, 3)
    with pytest.raises(ValueError, match="node features"):
        conv(x[:, :4], ei, et)
    with pytest.raises(ValueError, match="edge_type"):
        conv(x, ei, et[:-1])
    with pytest.raises(ValueError, match="relation"):
        conv(x, ei, et + 5)
    with pytest.raises(ValueError, match="aggregator"):
        KGAttentionConv(8, 4, 3, aggregator="max")
    with pytest.raises(ValueError, match="backend"):
        KGAttentionConv(8, 4, 3, backend="cuda")


# ---------------------------------------------------------------------------------------------
# bounded memory: recomputed relation scores and the gather-free aggregation
# ---------------------------------------------------------------------------------------------
def _saved_numels(fn) -> list[int]:
    """numel of every tensor autograd saves for the backward pass while ``fn`` runs."""
    sizes: list[int] = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("reuse", [False, True])
def test_recompute_scores_gives_the_same_outputs_and_gradients(shared, reuse):
    torch.manual_seed(0)
    x, ei, et = _random_graph()
    x = x.double()
    R = int(et.max()) + 1
    rel = {}
    if shared:
        kge = TransR(40, R, 8, 8).double()
        rel = {"rel_emb": kge.rel_emb.weight, "rel_proj": kge.rel_proj}
    a = KGAttentionConv(8, 5, None if shared else R, cached=True).double()
    b = KGAttentionConv(8, 5, None if shared else R, cached=True, recompute_scores=True).double()
    b.load_state_dict(a.state_dict())
    assert "recompute_scores=True" in repr(b)
    outs, grads = [], []
    for conv in (a, b):
        xx = x.clone().requires_grad_()
        out, (_, alpha) = conv(xx, ei, et, return_attention_weights=True, **rel)
        if reuse:  # a second layer on the same weights: the gather-free weighted sum
            out = conv(out[:, :5].repeat(1, 2)[:, :8].contiguous(), ei, et,
                       attention_weights=alpha) + out
        loss = out.pow(2).sum() + alpha.pow(2).sum()
        params = [xx, *rel.values(), *conv.parameters()]
        grads.append(torch.autograd.grad(loss, params))
        outs.append((out, alpha))
    for u, v in zip(outs[0], outs[1]):
        torch.testing.assert_close(u, v)
    for u, v in zip(*grads):
        torch.testing.assert_close(u, v)
    xx = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: b(t, ei, et, **rel), (xx,))


def test_recompute_scores_keeps_no_edge_sized_tensors():
    """With recomputed scores and the torch backend, autograd keeps O(E) scalars and node tables,
    nothing of E x d (edge gathers) or pairs x d (relation projections)."""
    g = torch.Generator().manual_seed(0)
    N, E, R, d = 100, 5_000, 10, 16
    ei = torch.randint(0, N, (2, E), generator=g)
    et = torch.randint(0, R, (E,), generator=g)
    x = torch.randn(N, d, generator=g, requires_grad=True)
    lean = KGAttentionConv(d, 8, R, recompute_scores=True, backend="torch")
    full = KGAttentionConv(d, 8, R, backend="torch")
    lean_sizes = _saved_numels(lambda: lean(x, ei, et))
    full_sizes = _saved_numels(lambda: full(x, ei, et))
    assert max(lean_sizes) <= E  # score / alpha / indices; the node table is N * d = 1,600
    assert max(full_sizes) > E   # the per-pair projections [pairs, d]
    _, (_, alpha) = lean(x, ei, et, return_attention_weights=True)
    assert max(_saved_numels(lambda: lean(x, ei, et, attention_weights=alpha))) <= E


def test_recompute_scores_takes_the_gather_free_path_on_any_backend(monkeypatch):
    """Memory mode must not fall back to a gathering backend (Triton on CUDA gathers x[src]), and
    layers reusing attention never use PyG's propagate unless backend="pyg"."""
    from kgseqgraph.nn import ops

    x, ei, et = _random_graph()
    seen = []
    real = ops.segment_softmax_aggregate

    def spy(*args, **kwargs):
        seen.append(kwargs["backend"])
        return real(*args, **{**kwargs, "backend": "torch"})  # Triton is not runnable here

    monkeypatch.setattr(ops, "segment_softmax_aggregate", spy)
    conv = KGAttentionConv(8, 4, 3, backend="triton", recompute_scores=True)
    _, (_, alpha) = conv(x, ei, et, return_attention_weights=True)
    assert seen == ["torch"]

    def no_propagate(*args, **kwargs):
        raise AssertionError("propagate keeps [E, d] tensors")

    monkeypatch.setattr(conv, "propagate", no_propagate)
    ref = KGAttentionConv(8, 4, 3, backend="pyg")
    ref.load_state_dict(conv.state_dict())
    torch.testing.assert_close(conv(x, ei, et, attention_weights=alpha),
                               ref(x, ei, et, attention_weights=alpha))
