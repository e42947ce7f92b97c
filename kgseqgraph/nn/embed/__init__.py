"""Item embedders: ID tables, graph-enriched embeddings (a stack of KG convolutions), KATRec's KG
item tables, KIRec's feature-fused table, fusion and reduction layers, and the
:class:`ItemTables` they return."""
from .fusion import ConcatFusion, GateFusion, SumFusion, build_fusion
from .graph_enriched import KGEnricher
from .id import IDEmbedder
from .kg_items import GatedKGItemEmbedder, KGItemEmbedder
from .knowledge_fused import KnowledgeFusedEmbedder
from .reduction import LinearProjection, pca_reduce
from .tables import ItemTables, as_item_tables

__all__ = ["KGEnricher", "IDEmbedder", "KGItemEmbedder", "GatedKGItemEmbedder",
           "KnowledgeFusedEmbedder", "LinearProjection", "pca_reduce", "ItemTables",
           "as_item_tables", "GateFusion", "ConcatFusion", "SumFusion", "build_fusion"]
