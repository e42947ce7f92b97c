"""Encoder variants shared by the encoder tests (tiny, seeded, eval mode)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from kgseqgraph.nn.encoders import (BERT4RecEncoder, GRU4RecEncoder, SASRecConfig, SASRecEncoder,
                                    SequenceEncoder)

D = 16


def _t5(hidden_size: int) -> SequenceEncoder:
    tf = pytest.importorskip("transformers")
    from kgseqgraph.nn.encoders import HFT5Encoder
    cfg = tf.T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, vocab_size=10)
    return HFT5Encoder(hidden_size=hidden_size, backbone_config=cfg)


def _gpt2(hidden_size: int) -> SequenceEncoder:
    tf = pytest.importorskip("transformers")
    from kgseqgraph.nn.encoders import HFGPT2Encoder
    cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=32, vocab_size=10,
                        bos_token_id=0, eos_token_id=0)
    return HFGPT2Encoder(hidden_size=hidden_size, backbone_config=cfg)


def _llama(hidden_size: int) -> SequenceEncoder:
    tf = pytest.importorskip("transformers")
    from kgseqgraph.nn.encoders import HFGPT2Encoder
    cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=10,
                         max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                         pad_token_id=0)
    return HFGPT2Encoder(hidden_size=hidden_size, backbone_config=cfg)


BUILDERS: dict[str, Callable[[], SequenceEncoder]] = {
    "sasrec": lambda: SASRecEncoder(hidden_size=D, num_layers=2, num_heads=2, max_len=20),
    "sasrec_recbole": lambda: SASRecEncoder(SASRecConfig.recbole(hidden_size=D, inner_size=32,
                                                                 max_len=20)),
    "sasrec_last": lambda: SASRecEncoder(hidden_size=D, max_len=20, position_origin="last",
                                         scale_input=True, activation="gelu"),
    "bert4rec": lambda: BERT4RecEncoder(hidden_size=D, num_layers=2, num_heads=2, max_len=20),
    "gru4rec": lambda: GRU4RecEncoder(hidden_size=D, rnn_hidden_size=24, num_layers=2),
    "hf_t5": lambda: _t5(32),
    "hf_t5_proj": lambda: _t5(D),
    "hf_gpt2_proj": lambda: _gpt2(D),
    "hf_llama_proj": lambda: _llama(D),
}
CAUSAL = ["sasrec", "sasrec_recbole", "sasrec_last", "gru4rec", "hf_gpt2_proj", "hf_llama_proj"]


def build(name: str, seed: int = 0) -> SequenceEncoder:
    torch.manual_seed(seed)
    return BUILDERS[name]().eval()


@pytest.fixture(params=list(BUILDERS))
def encoder(request: pytest.FixtureRequest) -> SequenceEncoder:
    return build(request.param)


@pytest.fixture(params=CAUSAL)
def causal_encoder(request: pytest.FixtureRequest) -> SequenceEncoder:
    return build(request.param)


@pytest.fixture
def encoder_builder() -> Callable[[str, int], SequenceEncoder]:
    return build


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: intra-op threads only add wake-up latency (large on a shared 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
