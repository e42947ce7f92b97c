"""A new KG-sequential model from the library's layers: KG-enriched item embeddings + GRU4Rec.

    python examples/custom_model_from_layers.py            # offline, synthetic data, ~1 minute

(The library's own ``kg-gru4rec`` / ``kg-sasrec`` put KATRec's KG item tables under these
encoders; this file shows the layers a variant of your own is made of.)
"""
from dataclasses import dataclass

import torch

from kgseqgraph.data import leave_one_out
from kgseqgraph.datasets import Synthetic
from kgseqgraph.models import IDEmbedder, SequentialConfig, SequentialModel, register_model
from kgseqgraph.nn.embed.fusion import build_fusion
from kgseqgraph.nn.embed.graph_enriched import KGEnricher
from kgseqgraph.training import TrainConfig, run_training


@dataclass
class KGGRUConfig(SequentialConfig):
    encoder: str = "gru4rec"                 # any registered encoder: sasrec, bert4rec, t5, …
    fusion: str = "sum"


class KGItems(torch.nn.Module):             # item table [N + 2, D] = ID ⊕ KG-enriched
    def __init__(self, config, data):
        super().__init__()
        self.n = config.num_items
        self.ids = IDEmbedder(config.num_items, config.hidden_size)
        self.kg = KGEnricher(data, in_channels=32, hidden_channels=(32, 16))
        self.fuse = build_fusion(config.fusion, config.hidden_size, self.kg.out_channels)

    def forward(self):
        v = self.ids()
        return torch.cat([self.fuse(v[: self.n], self.kg()), v[self.n:]])


@register_model("my-kg-gru4rec")
class MyKGGRU4Rec(SequentialModel):
    config_class, needs_graph = KGGRUConfig, True

    def build_item_embedder(self, config, data):
        return KGItems(config, data)


if __name__ == "__main__":
    data = Synthetic(num_users=500, num_items=300, seed=0)[0]
    split = leave_one_out(data)           # models see the training interactions only
    model = MyKGGRU4Rec(KGGRUConfig(num_items=300, max_len=20), data=split.train_graph)
    result = run_training(model, split, TrainConfig(epochs=5, output_dir=None))
    print({k: round(v, 4) for k, v in result["test"].items() if k in ("HR@10", "NDCG@10", "MRR")})
