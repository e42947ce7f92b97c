"""Item embedders: ID tables, graph-enriched embeddings (a stack of KG convolutions), KATRec's KG
item tables, fusion layers, and the :class:`ItemTables` they return."""
from .fusion import ConcatFusion, GateFusion, SumFusion, build_fusion
from .graph_enriched import KGEnricher
from .id import IDEmbedder
from .kg_items import GatedKGItemEmbedder, KGItemEmbedder
from .tables import ItemTables, as_item_tables

__all__ = ["KGEnricher", "IDEmbedder", "KGItemEmbedder", "GatedKGItemEmbedder", "ItemTables",
           "as_item_tables", "GateFusion", "ConcatFusion", "SumFusion", "build_fusion"]
