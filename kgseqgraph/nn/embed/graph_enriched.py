r"""Graph-enriched item embeddings: a stack of :class:`~kgseqgraph.nn.conv.KGAttentionConv` layers
run on the collaborative KG (the KG part of KATRec / KGAT)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Embedding, ModuleList
from torch_geometric.data import HeteroData

from ...data.views import RelationalGraph, relational_view
from ..conv.kg_attention import KGAttentionConv
from ..kge import TransR

__all__ = ["KGEnricher"]


def _per_relation_mean_weights(head: Tensor, relation: Tensor, num_relations: int) -> Tensor:
    r""":math:`1/|\mathcal{N}_h^r|` for every triple ``(head[e], relation[e], ·)``: the value of
    KGAT's row-normalised adjacency of relation :math:`r` (its ``si`` Laplacian), whose sum over
    relations is the propagation matrix without attention."""
    if head.numel() == 0:
        return torch.zeros(0)
    key = head * max(num_relations, 1) + relation
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].to(torch.get_default_dtype())


class KGEnricher(torch.nn.Module):
    r"""Item (and entity / user) embeddings enriched by :math:`L` layers of knowledge-aware
    attentive propagation over the collaborative KG:

    .. math::
        \mathbf{h}^{(l)} = \mathrm{KGAttentionConv}_l(\mathbf{h}^{(l-1)}), \qquad
        \mathbf{e}^{(l)} = \frac{\mathbf{h}^{(l)}}{\|\mathbf{h}^{(l)}\|_2},
        \qquad
        \mathbf{e}^{*} = \mathbf{e}^{(0)} \,\|\, \mathbf{e}^{(1)} \,\|\, \cdots \,\|\,
        \mathbf{e}^{(L)},

    with :math:`\mathbf{h}^{(0)} = \mathbf{e}^{(0)}`, so the output size is
    ``in_channels + sum(hidden_channels)`` (64 + 32 + 16 + 16 = 128 by default). As in KGAT's
    and KATRec's code, layer :math:`l + 1` reads the un-normalised :math:`\mathbf{h}^{(l)}` and
    only the concatenated copies are normalised (``propagate_normalized=True`` feeds
    :math:`\mathbf{e}^{(l)}` forward instead). :math:`\mathbf{e}^{(0)}` comes from the module's own table over all nodes, or — for
    the item rows — from embeddings passed to :meth:`forward` (e.g. a sequence model's item table).

    The relation-typed view of the graph (:func:`~kgseqgraph.data.relational_view`, edges sorted
    by head with CSR offsets) is built once and kept as buffers, so ``.to(device)`` moves it.

    Args:
        graph: the collaborative KG :class:`~torch_geometric.data.HeteroData` or a prepared
            :class:`~kgseqgraph.data.RelationalGraph`.
        in_channels: size of :math:`\mathbf{e}^{(0)}`.
        hidden_channels: output size of each layer; its length is :math:`L` (``(32,)`` is the
            one-level ablation).
        node_types: node types propagated over (``("item", "entity")``: KATRec's KG; add
            ``"user"`` for KGAT's collaborative KG). Ignored for a ``RelationalGraph``.
        aggregator: ``"bi-interaction"``, ``"gcn"`` or ``"graphsage"``.
        dropout: message dropout of every layer.
        use_attention: ``False`` replaces the attention by fixed weights (the no-attention
            ablation), see ``uniform_weights``.
        uniform_weights: the fixed weights without attention: ``"relation"`` (KGAT's and
            KATRec's code: the sum over relations of the row-normalised per-relation adjacency,
            :math:`\alpha(h, r, t) = 1/|\mathcal{N}_h^r|` with :math:`\mathcal{N}_h^r` the
            triples of head :math:`h` and relation :math:`r`) or ``"node"`` (the mean over all
            neighbours, :math:`1/|\mathcal{N}_h|`).
        reuse_attention: compute the attention once, in layer 1 from :math:`\mathbf{e}^{(0)}`,
            and reuse it in every layer (KGAT's scheme); by default each layer attends with its
            own :math:`\mathbf{W}_r, \mathbf{e}_r` on its own input.
        kge: a :class:`~kgseqgraph.nn.kge.TransR` to share with (KATRec): its node table is
            :math:`\mathbf{e}^{(0)}` and its :math:`\mathbf{W}_r, \mathbf{e}_r` score the first
            layer's attention (later layers have their own unless ``reuse_attention``).
        normalize: L2-normalise each layer's output in :math:`\mathbf{e}^{*}`.
        propagate_normalized: feed the normalised :math:`\mathbf{e}^{(l)}` to the next layer
            instead of :math:`\mathbf{h}^{(l)}` (KGAT feeds :math:`\mathbf{h}^{(l)}`).
        backend: attention backend of the convs (see :class:`~kgseqgraph.nn.conv.KGAttentionConv`).
        negative_slope: LeakyReLU slope of the aggregators.
        recompute_scores: the convs keep no per-edge tensors for backward (see
            :class:`~kgseqgraph.nn.conv.KGAttentionConv`): bounded memory on large KGs for a
            second computation of the relation projections.
    """

    def __init__(self, graph: HeteroData | RelationalGraph, in_channels: int = 64,
                 hidden_channels: Sequence[int] = (32, 16, 16),
                 node_types: Sequence[str] = ("item", "entity"), aggregator: str = "bi-interaction",
                 dropout: float = 0.1, use_attention: bool = True, reuse_attention: bool = False,
                 kge: TransR | None = None, normalize: bool = True, backend: str = "auto",
                 negative_slope: float = 0.2, recompute_scores: bool = False,
                 uniform_weights: str = "relation", propagate_normalized: bool = False) -> None:
        super().__init__()
        view = graph if isinstance(graph, RelationalGraph) else relational_view(graph, node_types)
        hidden = [int(h) for h in hidden_channels]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden_channels must be positive sizes, got {hidden_channels}")
        if "item" not in view.node_offsets:
            raise ValueError(f"the graph view has no 'item' nodes (node types {list(view.node_offsets)})")
        self.num_nodes = view.num_nodes
        self.num_relations = view.num_relations
        self.node_offsets = dict(view.node_offsets)
        self.node_counts = dict(view.node_counts)
        self.relation_names = list(view.relation_names)
        self.in_channels = int(in_channels)
        self.hidden_channels = tuple(hidden)
        if uniform_weights not in {"relation", "node"}:
            raise ValueError(f"uniform_weights must be 'relation' or 'node', got "
                             f"{uniform_weights!r}")
        self.normalize = normalize
        self.propagate_normalized = propagate_normalized
        self.use_attention = use_attention
        self.uniform_weights = uniform_weights
        self.reuse_attention = reuse_attention and use_attention
        self.register_buffer("edge_index", view.edge_index.contiguous(), persistent=False)
        self.register_buffer("edge_type", view.relation.contiguous(), persistent=False)
        self.register_buffer("ptr", view.ptr.contiguous(), persistent=False)
        fixed = None
        if not use_attention and uniform_weights == "relation":
            fixed = _per_relation_mean_weights(view.head, view.relation, view.num_relations)
        self.register_buffer("fixed_weights", fixed, persistent=False)

        if kge is not None:
            if not isinstance(kge, TransR):
                raise TypeError(f"kge must be a TransR model, got {type(kge).__name__}")
            if (kge.num_nodes, kge.num_relations, kge.embedding_dim) != (
                    self.num_nodes, self.num_relations, self.in_channels):
                raise ValueError(
                    f"kge is sized ({kge.num_nodes} nodes, {kge.num_relations} relations, dim "
                    f"{kge.embedding_dim}) but the graph view needs ({self.num_nodes}, "
                    f"{self.num_relations}, {self.in_channels})")
        self.kge = kge
        self.node_emb = kge.node_emb if kge is not None else Embedding(self.num_nodes, in_channels)

        dims = [self.in_channels, *hidden]
        convs = []
        for layer, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            owns_relations = use_attention and not (layer == 0 and kge is not None) \
                and not (layer > 0 and self.reuse_attention)
            convs.append(KGAttentionConv(
                d_in, d_out, self.num_relations if owns_relations else None,
                aggregator=aggregator, dropout=dropout, negative_slope=negative_slope,
                use_attention=use_attention, backend=backend, cached=True,
                recompute_scores=recompute_scores))
        self.convs = ModuleList(convs)
        if kge is None:
            torch.nn.init.xavier_uniform_(self.node_emb.weight)

    @property
    def out_channels(self) -> int:
        return self.in_channels + sum(self.hidden_channels)

    @property
    def num_items(self) -> int:
        return self.node_counts["item"]

    def reset_parameters(self) -> None:
        if self.kge is not None:
            self.kge.reset_parameters()
        else:
            torch.nn.init.xavier_uniform_(self.node_emb.weight)
        for conv in self.convs:
            conv.reset_parameters()

    def node_slice(self, node_type: str) -> slice:
        if node_type not in self.node_offsets:
            raise KeyError(f"node type {node_type!r} is not propagated (have "
                           f"{list(self.node_offsets)})")
        start = self.node_offsets[node_type]
        return slice(start, start + self.node_counts[node_type])

    def initial_embeddings(self, item_embeddings: Tensor | None = None) -> Tensor:
        r""":math:`\mathbf{e}^{(0)}` for all nodes, with the item rows replaced by
        ``item_embeddings [num_items, in_channels]`` when given."""
        x = self.node_emb.weight
        if item_embeddings is None:
            return x
        if item_embeddings.shape != (self.num_items, self.in_channels):
            raise ValueError(f"expected item_embeddings [{self.num_items}, {self.in_channels}] "
                             f"(one row per item, in item-node order), got "
                             f"{tuple(item_embeddings.shape)}")
        s = self.node_slice("item")
        return torch.cat([x[:s.start], item_embeddings.to(x.dtype), x[s.stop:]])

    def node_embeddings(self, item_embeddings: Tensor | None = None) -> Tensor:
        r""":math:`\mathbf{e}^{*}` of every node of the view, ``[num_nodes, out_channels]``."""
        x = self.initial_embeddings(item_embeddings)
        outs = [x]
        alpha = self.fixed_weights  # the no-attention ablation's per-relation means, or None
        rel = {}
        if self.kge is not None and self.use_attention:
            rel = {"rel_emb": self.kge.rel_emb.weight, "rel_proj": self.kge.rel_proj}
        for layer, conv in enumerate(self.convs):
            if layer == 0 and alpha is None:
                res = conv(x, self.edge_index, self.edge_type, ptr=self.ptr,
                           return_attention_weights=self.reuse_attention, **rel)
                if self.reuse_attention:
                    res, (_, alpha) = res
            else:
                res = conv(x, self.edge_index, self.edge_type, ptr=self.ptr,
                           attention_weights=alpha)
            out = F.normalize(res, p=2, dim=-1) if self.normalize else res
            outs.append(out)
            x = out if self.propagate_normalized else res
        return torch.cat(outs, dim=-1)

    # ------------------------------------------------------------------ attention and edges
    def attention_weights(self) -> Tensor:
        r""":math:`\alpha(h, r, t)` of every edge of the view (the order of :attr:`edge_index`:
        row 0 the tail :math:`t`, row 1 the head :math:`h`), as :meth:`node_embeddings` uses
        it in **every** layer: with ``reuse_attention`` the softmax over each head's triples
        of layer 1's :math:`\pi` on :math:`\mathbf{e}^{(0)}` (TransR's parameters); without
        attention the fixed weights (per-relation or per-node means). Computed without
        gradient; the attention has no dropout, so train and eval mode agree.

        Raises:
            ValueError: attention computed per layer (``reuse_attention=False``): one edge
                then has one weight per layer, and no single :math:`\alpha` describes it.
        """
        if self.use_attention and not self.reuse_attention:
            raise ValueError("this enricher computes one attention per layer "
                             "(reuse_attention=False): an edge has no single weight; build it "
                             "with reuse_attention=True (KGAT's scheme, KATRec's default)")
        if self.fixed_weights is not None:
            return self.fixed_weights.clone()
        rel = {}
        if self.kge is not None and self.use_attention:
            rel = {"rel_emb": self.kge.rel_emb.weight, "rel_proj": self.kge.rel_proj}
        with torch.no_grad():
            _, (_, alpha) = self.convs[0](self.initial_embeddings(), self.edge_index,
                                          self.edge_type, ptr=self.ptr,
                                          return_attention_weights=True, **rel)
        return alpha.detach()

    def _set_edges(self, edge_index: Tensor, edge_type: Tensor) -> None:
        """Replace the view's edges (sorted by head, ``edge_index[1]``) and what derives from
        them (CSR ``ptr``, fixed weights, the convs' cached plans)."""
        head = edge_index[1]
        ptr = torch.zeros(self.num_nodes + 1, dtype=torch.long, device=head.device)
        ptr[1:] = torch.cumsum(torch.bincount(head, minlength=self.num_nodes), 0)
        self.edge_index, self.edge_type, self.ptr = edge_index, edge_type, ptr
        if self.fixed_weights is not None:
            self.fixed_weights = _per_relation_mean_weights(
                head, edge_type, self.num_relations).to(self.fixed_weights)
        for conv in self.convs:
            conv._cached_plan = None

    @contextlib.contextmanager
    def edges_kept(self, keep: Tensor) -> Iterator[KGEnricher]:
        """Within the block, propagate over the edges where ``keep [E]`` is true only — as if
        the graph never had the others: attention (or fixed weights) renormalised over each
        head's remaining triples. For deletion tests of explanations."""
        if keep.dtype != torch.bool or keep.shape != (self.edge_index.size(1),):
            raise ValueError(f"keep must be a bool mask over the {self.edge_index.size(1)} edges")
        saved = (self.edge_index, self.edge_type, self.ptr, self.fixed_weights)
        keep = keep.to(self.edge_index.device)
        self._set_edges(saved[0][:, keep], saved[1][keep])
        try:
            yield self
        finally:
            self.edge_index, self.edge_type, self.ptr, self.fixed_weights = saved
            for conv in self.convs:
                conv._cached_plan = None

    def replace_graph(self, view: RelationalGraph) -> None:
        """Propagate over another view with the same relations (item nodes added: see
        :meth:`~kgseqgraph.nn.embed.KGItemEmbedder.add_items`, which also resizes the node
        table)."""
        if list(view.relation_names) != self.relation_names:
            raise ValueError("the new view's relations differ from the enricher's")
        self.num_nodes = view.num_nodes
        self.node_offsets = dict(view.node_offsets)
        self.node_counts = dict(view.node_counts)
        self._set_edges(view.edge_index.contiguous().to(self.edge_index.device),
                        view.relation.contiguous().to(self.edge_type.device))

    def embeddings_by_type(self, item_embeddings: Tensor | None = None) -> dict[str, Tensor]:
        """:meth:`node_embeddings` split by node type."""
        z = self.node_embeddings(item_embeddings)
        return {t: z[self.node_slice(t)] for t in self.node_offsets}

    def forward(self, item_embeddings: Tensor | None = None) -> Tensor:
        """Enriched item embeddings ``[num_items, out_channels]`` (item-node order)."""
        return self.node_embeddings(item_embeddings)[self.node_slice("item")]

    def __repr__(self) -> str:
        dims = " -> ".join(str(d) for d in (self.in_channels, *self.hidden_channels))
        return (f"{self.__class__.__name__}(nodes={self.num_nodes}, "
                f"relations={self.num_relations}, edges={self.edge_index.size(1)}, layers={dims}, "
                f"out_channels={self.out_channels}, attention={self.use_attention}"
                f"{'' if self.use_attention else f' ({self.uniform_weights} means)'}, "
                f"reuse_attention={self.reuse_attention}, shared_kge={self.kge is not None})")
