r"""Item tables built on the collaborative KG: KATRec's wiring, and a gated ID + KG table.

:class:`KGItemEmbedder` is KATRec's item representation (Amjadi, Taheri & Tulabandhula, DS 2021),
as the authors' code (``DanialTaheri/KATRec``, ``Model/modeling_Bert.py``, ``Model/Main.py``)
builds it:

.. math::
    \mathbf{e}^{*} &= \mathrm{KGEnricher}(\mathbf{e}^{(0)}) \in
        \mathbb{R}^{|\mathcal{V}| \times q}, \qquad q = d + \textstyle\sum_l d_l, \\
    \mathbf{V}^{*}_i &= \mathbf{e}^{*}_i \quad (i < N), \qquad
        \mathbf{V}^{*}_{N}, \mathbf{V}^{*}_{N+1} \text{ learned (padding, [mask])}, \\
    \hat{\mathbf{E}}_i &= \sigma\big((\mathbf{V}^{*}_i \,\Vert\, \mathbf{E}^{*}_i)
        \hat{\mathbf{W}} + \hat{\mathbf{b}}\big), \qquad \mathbf{E}^{*}_i = \mathbf{e}^{*}_i,

where :math:`\mathbf{e}^{(0)}` is the TransR node table (users, items and entities of the
collaborative KG, shared with the TransR loss and the attention), the enricher stacks
knowledge-aware attentive bi-interaction layers (:class:`~kgseqgraph.nn.embed.KGEnricher`),
:math:`\mathbf{V}^{*}` is the table the sequence encoder reads (BERT's input embedding, to which
the encoder adds positions: :math:`\mathbf{e}^{*}_i + \mathbf{p}_t`) and :math:`\hat{\mathbf{E}}`
the table its output is scored against. The paper writes the output activation as
:math:`\sigma`; the authors' code applies BERT's hidden activation (GELU) there, which is the
default (``output_activation``).

Ablations (the paper's names):

* **Connection** (``connection=False``): the encoder reads a separate ID table
  :math:`\mathbf{V} \in \mathbb{R}^{(N+2) \times q}` instead of :math:`\mathbf{e}^{*}` (the
  authors' ``use_KG_connection=False``); the KG still enters the output fusion.
* **Concat** (``output_fusion=False``): no output fusion, :math:`\hat{\mathbf{E}} =
  \mathbf{V}^{*}_{0:N}` (tied input/output table; the authors' ``use_token_entity_concat=False``).
* **NoAtten**, **Level-1**: options of the enricher (``use_attention``, ``kg_hidden``).

:class:`GatedKGItemEmbedder` is the earlier wiring of this library, kept as an option
(``KATRecConfig(wiring="gated")``): an ID table and :math:`\mathbf{e}^{*}` fused into one table of
the encoder's width (sigmoid gate, concatenation or sum), used for input and output alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.views import RelationalGraph, relational_view
from ..kge import TransR
from .fusion import build_fusion
from .graph_enriched import KGEnricher
from .tables import ItemTables

__all__ = ["KGItemEmbedder", "GatedKGItemEmbedder", "OUTPUT_ACTIVATIONS"]

OUTPUT_ACTIVATIONS = {"gelu": F.gelu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                      "identity": lambda x: x}


def _graph_options(kg_dim: int, relation_dim: int | None, kg_hidden: Sequence[int],
                   node_types: Sequence[str], aggregator: str, kg_dropout: float,
                   use_attention: bool, uniform_weights: str, reuse_attention: bool,
                   kge_reg: float, recompute: bool) -> dict[str, Any]:
    return dict(kg_dim=kg_dim, relation_dim=relation_dim, kg_hidden=kg_hidden,
                node_types=node_types, aggregator=aggregator, kg_dropout=kg_dropout,
                use_attention=use_attention, uniform_weights=uniform_weights,
                reuse_attention=reuse_attention, kge_reg=kge_reg, recompute=recompute)


#: how a new item's TransR row e^(0) is set (KGItemEmbedder.add_items)
NEW_ITEM_INITS = ("mean", "transr")


def _transr_rows(table: Tensor, kge: TransR, n: int, m: int, head: Tensor, relation: Tensor,
                 tail: Tensor, content: Tensor, ridge: float) -> Tensor:
    r"""TransR's own fit of the new items' rows to their facts, every other row fixed: for
    new item :math:`x` the minimiser of
    :math:`\sum \|\mathbf{W}_r\mathbf{x} + \mathbf{e}_r - \mathbf{W}_r\mathbf{e}_t\|^2`
    over its triples :math:`(x, r, t)`, plus
    :math:`\sum \|\mathbf{W}_r\mathbf{e}_h + \mathbf{e}_r - \mathbf{W}_r\mathbf{x}\|^2`
    over :math:`(h, r, x)`, plus :math:`\lambda\|\mathbf{x} - \mathbf{x}_0\|^2` towards the
    mean of its neighbours (a linear least-squares problem, solved exactly)."""
    proj = kge.rel_proj.detach().cpu().to(torch.float64)  # [R, d_e, d_r]: W_r e = e @ proj[r]
    rel = kge.rel_emb.weight.detach().cpu().to(torch.float64)
    d = table.size(1)
    x0 = table[n:n + m].to(torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    as_head = (head >= n) & (head < n + m) & content[tail] & (relation >= 0)
    as_tail = (tail >= n) & (tail < n + m) & content[head] & (relation >= 0)
    gram = ridge * eye.expand(m, d, d).clone()
    rhs = ridge * x0.clone()
    tab = table.to(torch.float64)
    for mask, new, other, sign in ((as_head, head, tail, 1.0), (as_tail, tail, head, -1.0)):
        if not mask.any():
            continue
        i, r, o = new[mask] - n, relation[mask], other[mask]
        w = proj[r]  # [k, d_e, d_r]
        # residual  W_r x - (W_r e_o - sign * e_r)  (as head), or  W_r x - (W_r e_o + e_r)
        target = torch.einsum("kd,kde->ke", tab[o], w) - sign * rel[r]
        gram.index_add_(0, i, torch.einsum("kde,kfe->kdf", w, w))
        rhs.index_add_(0, i, torch.einsum("kde,ke->kd", w, target))
    out = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)
    return out.to(table.dtype)


class _GraphPart(nn.Module):
    """TransR over the collaborative KG and the enricher that shares its tables."""

    def __init__(self, data: Any, kg_dim: int, relation_dim: int | None,
                 kg_hidden: Sequence[int], node_types: Sequence[str], aggregator: str,
                 kg_dropout: float, use_attention: bool, uniform_weights: str,
                 reuse_attention: bool, kge_reg: float, recompute: bool) -> None:
        super().__init__()
        if data is None:
            raise ValueError("a KG item embedder needs the collaborative KG: pass "
                             "data=<HeteroData> (split.train_graph)")
        view = relational_view(data, tuple(node_types))
        if view.num_edges == 0:
            raise ValueError(f"the graph has no edges among node types {list(node_types)}: a KG "
                             "item embedder needs a knowledge graph")
        self.kge = TransR(view.num_nodes, view.num_relations, kg_dim, relation_dim,
                          reg_weight=kge_reg)
        self.enricher = KGEnricher(view, in_channels=kg_dim, hidden_channels=tuple(kg_hidden),
                                   aggregator=aggregator, dropout=kg_dropout,
                                   use_attention=use_attention, reuse_attention=reuse_attention,
                                   kge=self.kge, recompute_scores=recompute,
                                   uniform_weights=uniform_weights)
        # the typed triples (sorted by head, CSR ``ptr``) that the TransR loss samples from
        self.register_buffer("kg_head", view.head.clone(), persistent=False)
        self.register_buffer("kg_relation", view.relation.clone(), persistent=False)
        self.register_buffer("kg_tail", view.tail.clone(), persistent=False)
        self.register_buffer("kg_ptr", view.ptr.clone(), persistent=False)

    @property
    def num_items(self) -> int:
        return self.enricher.num_items

    @torch.no_grad()
    def add_items(self, data: Any, init: str = "mean", ridge: float = 0.1) -> int:
        r"""Extend the graph part by the items that ``data`` appends to its graph (see
        :meth:`KGItemEmbedder.add_items`); returns how many."""
        if init not in NEW_ITEM_INITS:
            raise ValueError(f"init must be one of {NEW_ITEM_INITS}, got {init!r}")
        enricher, kge = self.enricher, self.kge
        node_types = list(enricher.node_offsets)
        if enricher.node_offsets.get("item") != 0:
            # the renumbering below puts new items right after the existing ones at node 0..n-1
            raise ValueError(f"add_items needs 'item' first in the model's node types, got "
                             f"{node_types}: build the model with node_types=['item', ...]")
        view = relational_view(data, tuple(node_types))
        n, n_new = enricher.node_counts["item"], view.node_counts["item"]
        m = n_new - n
        if m < 0:
            raise ValueError(f"the graph has {n_new} items, fewer than the model's {n}")
        for t in node_types:
            if t != "item" and view.node_counts[t] != enricher.node_counts[t]:
                raise ValueError(f"the graph has {view.node_counts[t]} {t} nodes, the model "
                                 f"{enricher.node_counts[t]}: only items can be added")
        rel_of = {name: r for r, name in enumerate(enricher.relation_names)}
        is_new_head = (view.head >= n) & (view.head < n_new)
        is_new_tail = (view.tail >= n) & (view.tail < n_new)
        unknown = sorted({view.relation_names[int(r)] for r in view.relation[is_new_head]
                          if view.relation_names[int(r)] not in rel_of})
        if unknown:
            raise ValueError(f"the new items use relations the model does not know: {unknown}")
        remap = torch.tensor([rel_of.get(name, -1) for name in view.relation_names],
                             dtype=torch.long)
        # the existing edges, renumbered (entity and user ids move up by m)
        old_head, old_rel, old_tail = (self.kg_head.cpu(), self.kg_relation.cpu(),
                                       self.kg_tail.cpu())
        shift = lambda x: torch.where(x >= n, x + m, x)  # noqa: E731
        old_head, old_tail = shift(old_head), shift(old_tail)
        # the graph must extend the model's: its edges between existing nodes are the model's
        rest = ~is_new_head & ~is_new_tail
        if rest.any() and int(remap[view.relation[rest]].min()) < 0:
            raise ValueError("the graph holds relations among existing nodes that the model "
                             "does not know: it is not the model's graph with items added")
        span = view.num_nodes

        def keys(h: Tensor, r: Tensor, t: Tensor) -> Tensor:
            return torch.sort((h * max(len(rel_of), 1) + r) * span + t).values

        if not torch.equal(keys(view.head[rest], remap[view.relation[rest]], view.tail[rest]),
                           keys(old_head, old_rel, old_tail)):
            raise ValueError("the graph's edges among existing nodes differ from the model's "
                             "graph (other interactions or KG facts): pass the model's training "
                             "graph with the new items appended (e.g. ColdItemSplit.cold_graph "
                             "or kgseqgraph.data.append_items)")
        # new items read the graph (edges whose head is a new item); facts pointing from an
        # existing node to a new one are left out so every existing node propagates as before
        head = torch.cat([old_head, view.head[is_new_head]])
        rel = torch.cat([old_rel, remap[view.relation[is_new_head]]])
        tail = torch.cat([old_tail, view.tail[is_new_head]])
        order = torch.argsort(head, stable=True)
        head, rel, tail = head[order], rel[order], tail[order]
        ptr = torch.zeros(view.num_nodes + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.bincount(head, minlength=view.num_nodes), 0)
        extended = RelationalGraph(head, rel, tail, ptr, view.num_nodes, view.node_offsets,
                                   view.node_counts, list(enricher.relation_names))
        # e^(0) of a new item: the mean of its item / entity neighbours' rows (knowledge);
        # without any, the mean item row
        weight = kge.node_emb.weight
        old = weight.detach().cpu()
        table = torch.cat([old[:n], old.new_zeros(m, old.size(1)), old[n:]])
        content = torch.zeros(view.num_nodes, dtype=torch.bool)
        for t in ("item", "entity"):
            if t in view.node_offsets:
                s = view.node_offsets[t]
                content[s:s + view.node_counts[t]] = True
        content[n:n_new] = False
        h_new, t_new = view.head[is_new_head], view.tail[is_new_head]
        sel = content[t_new]
        h_new, t_new = h_new[sel], t_new[sel]
        sums = torch.zeros(m, old.size(1), dtype=old.dtype).index_add_(0, h_new - n, table[t_new])
        counts = torch.bincount(h_new - n, minlength=m).to(old.dtype).unsqueeze(1)
        mean_item = old[:n].mean(0, keepdim=True) if n else old.new_zeros(1, old.size(1))
        table[n:n_new] = torch.where(counts > 0, sums / counts.clamp_min(1), mean_item)
        if init == "transr":
            remap_full = remap[view.relation]
            table[n:n_new] = _transr_rows(table, kge, n, m, view.head, remap_full, view.tail,
                                          content, ridge)
        new_emb = nn.Embedding(view.num_nodes, old.size(1)).to(device=weight.device,
                                                                dtype=weight.dtype)
        new_emb.weight.copy_(table.to(weight))
        new_emb.weight.requires_grad_(weight.requires_grad)
        kge.node_emb = new_emb
        kge.num_nodes = view.num_nodes
        enricher.node_emb = new_emb
        enricher.replace_graph(extended)
        dev = self.kg_head.device
        self.kg_head, self.kg_relation, self.kg_tail, self.kg_ptr = (
            head.to(dev), rel.to(dev), tail.to(dev), ptr.to(dev))
        return m


class _KGTables(nn.Module):
    """What both KG item embedders share: the graph part and access to its TransR and enricher."""

    def __init__(self, data: Any, num_items: int, graph_options: dict[str, Any],
                 detach_kg: bool) -> None:
        super().__init__()
        self.graph = _GraphPart(data, **graph_options)
        if self.graph.num_items != num_items:
            raise ValueError(f"the graph has {self.graph.num_items} items, the model {num_items}")
        self.num_items = int(num_items)
        self.detach_kg = detach_kg

    @property
    def kge(self) -> TransR:
        return self.graph.kge

    @property
    def enricher(self) -> KGEnricher:
        return self.graph.enricher

    def _add_graph_items(self, data: Any, init: str = "mean") -> int:
        m = self.graph.add_items(data, init=init)
        self.num_items += m
        return m

    def kg_embeddings(self) -> Tensor:
        r""":math:`\mathbf{E}^{*}` of the items, ``[N, q]`` (detached with ``detach_kg``)."""
        kg = self.graph.enricher()
        return kg.detach() if self.detach_kg else kg


class KGItemEmbedder(_KGTables):
    r"""KATRec's item tables (see the module docstring): input :math:`\mathbf{V}^{*}`
    ``[N + 2, q]`` and output :math:`\hat{\mathbf{E}}` ``[N, q]``.

    Args:
        data: the collaborative KG (a split's ``train_graph``).
        num_items: :math:`N` (must match the graph).
        kg_dim: :math:`d`, width of :math:`\mathbf{e}^{(0)}` (TransR entity space).
        relation_dim: TransR relation space :math:`d_r` (``None``: :math:`d`).
        kg_hidden: widths :math:`d_l` of the propagation layers.
        node_types: node types of the collaborative KG propagated over (with ``"user"``: KGAT's
            user–item–entity graph).
        aggregator, kg_dropout, use_attention, uniform_weights, reuse_attention: of
            :class:`~kgseqgraph.nn.embed.KGEnricher`.
        kge_reg: L2 coefficient of the TransR loss.
        connection: the encoder reads :math:`\mathbf{e}^{*}` (``False``: its own ID table).
        output_fusion: score against :math:`\hat{\mathbf{E}}` (``False``: the input table).
        output_activation: :math:`\sigma` of the output fusion (``"gelu"``, ``"sigmoid"``,
            ``"tanh"``, ``"identity"``).
        detach_kg: the recommendation loss does not train the KG part (it learns from the TransR
            loss alone) — not one of the paper's ablations.
        init_std: std of the normal init of the special rows, the ID table and :math:`\hat{W}`
            (BERT's ``initializer_range``).
        recompute: keep no per-edge tensors of the KG layers for backward.
    """

    def __init__(self, data: Any, num_items: int, kg_dim: int = 64,
                 relation_dim: int | None = None, kg_hidden: Sequence[int] = (32, 16, 16),
                 node_types: Sequence[str] = ("item", "entity", "user"),
                 aggregator: str = "bi-interaction", kg_dropout: float = 0.1,
                 use_attention: bool = True, uniform_weights: str = "relation",
                 reuse_attention: bool = True, kge_reg: float = 1e-5, connection: bool = True,
                 output_fusion: bool = True, output_activation: str = "gelu",
                 detach_kg: bool = False, init_std: float = 0.02,
                 recompute: bool = False) -> None:
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {sorted(OUTPUT_ACTIVATIONS)}, got "
                             f"{output_activation!r}")
        super().__init__(data, num_items, _graph_options(
            kg_dim, relation_dim, kg_hidden, node_types, aggregator, kg_dropout, use_attention,
            uniform_weights, reuse_attention, kge_reg, recompute), detach_kg)
        self.dim = self.graph.enricher.out_channels
        self.connection = connection
        self.init_std = init_std
        self.output_activation = output_activation
        if connection:
            self.special = nn.Parameter(torch.empty(2, self.dim))  # padding, [mask]
            self.id = None
        else:
            self.register_parameter("special", None)
            from .id import IDEmbedder

            self.id = IDEmbedder(num_items, self.dim, init_std)
        self.output = nn.Linear(2 * self.dim, self.dim) if output_fusion else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.special is not None:
            nn.init.normal_(self.special, std=self.init_std)
        if self.output is not None:
            nn.init.normal_(self.output.weight, std=self.init_std)
            nn.init.zeros_(self.output.bias)

    @torch.no_grad()
    def add_items(self, data: Any, init: str = "mean") -> int:
        r"""Add the items that ``data`` appends to the model's graph (items ``N … N+M-1``; every
        other node and every edge among existing nodes as in the graph the model was built on,
        else a :class:`ValueError`); returns :math:`M`.

        * The view gains the triples whose **head is a new item** (the new item aggregates its
          KG neighbours, layer by layer, with the trained attention); triples from an existing
          node to a new one are left out, so every existing node — and every existing item's
          input and output rows — propagates exactly as before.
        * :math:`\mathbf{e}^{(0)}` of a new item (its TransR row): ``init="mean"``, the mean of
          the rows of its item and entity neighbours (without any: the mean item row);
          ``init="transr"``, TransR's own least-squares fit of the row to the item's triples,
          every other parameter fixed, shrunk towards that mean. Nothing is trained.
        * The output fusion :math:`\hat{\mathbf{W}}, \hat{\mathbf{b}}` is shared by all items;
          with ``connection=False`` the new items' ID rows are zero, so their score comes from
          the graph alone.

        Relations must be the model's; new entities or users are not supported.
        """
        m = self._add_graph_items(data, init)
        if self.id is not None:
            self.id.add_items(m, init="zeros")
        return m

    def forward(self) -> ItemTables:
        kg = self.kg_embeddings()
        if self.id is not None:
            inp = self.id()
        else:
            pad = torch.zeros_like(self.special[:1])
            inp = torch.cat([kg, pad, self.special[1:]])
        if self.output is None:
            return ItemTables(inp, inp[: self.num_items])
        act = OUTPUT_ACTIVATIONS[self.output_activation]
        out = act(self.output(torch.cat([inp[: self.num_items], kg], dim=-1)))
        return ItemTables(inp, out)

    def extra_repr(self) -> str:
        return (f"items={self.num_items}, dim={self.dim}, connection={self.connection}, "
                f"output_fusion={self.output is not None}, "
                f"output_activation={self.output_activation!r}, detach_kg={self.detach_kg}")


class GatedKGItemEmbedder(_KGTables):
    r"""One ``[N + 2, D]`` table fusing ID embeddings :math:`\mathbf{v}_i` with the items'
    :math:`\mathbf{e}^{*}_i`: :math:`\mathbf{t}_i = \mathrm{fusion}(\mathbf{v}_i, \mathbf{e}^{*}_i)`
    (``"gate"``: :math:`\sigma((\mathbf{v}_i \Vert \mathbf{e}^{*}_i)\mathbf{W} + \mathbf{b})`,
    ``"concat"``, ``"sum"``; :mod:`~kgseqgraph.nn.embed.fusion`); rows :math:`N`, :math:`N+1`
    (padding, ``[mask]``) from the ID table. The same table is read and scored against.

    Arguments as :class:`KGItemEmbedder`, plus ``hidden_size`` :math:`D` and ``fusion``.
    """

    def __init__(self, data: Any, num_items: int, hidden_size: int, fusion: str = "gate",
                 kg_dim: int = 64, relation_dim: int | None = None,
                 kg_hidden: Sequence[int] = (32, 16, 16),
                 node_types: Sequence[str] = ("item", "entity", "user"),
                 aggregator: str = "bi-interaction", kg_dropout: float = 0.1,
                 use_attention: bool = True, uniform_weights: str = "relation",
                 reuse_attention: bool = True, kge_reg: float = 1e-5, detach_kg: bool = False,
                 init_std: float = 0.02, recompute: bool = False) -> None:
        from .id import IDEmbedder

        super().__init__(data, num_items, _graph_options(
            kg_dim, relation_dim, kg_hidden, node_types, aggregator, kg_dropout, use_attention,
            uniform_weights, reuse_attention, kge_reg, recompute), detach_kg)
        self.id = IDEmbedder(num_items, hidden_size, init_std)
        self.fusion = build_fusion(fusion, hidden_size, self.graph.enricher.out_channels,
                                   hidden_size)

    @torch.no_grad()
    def add_items(self, data: Any, init: str = "mean") -> int:
        """As :meth:`KGItemEmbedder.add_items`; the new items' ID rows are zero."""
        m = self._add_graph_items(data, init)
        self.id.add_items(m, init="zeros")
        return m

    def forward(self) -> Tensor:
        ids = self.id()
        fused = self.fusion(ids[: self.num_items], self.kg_embeddings())
        return torch.cat([fused, ids[self.num_items:]])
