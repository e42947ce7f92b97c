import pytest
import torch

from kgseqgraph.nn.embed.fusion import ConcatFusion, GateFusion, SumFusion, build_fusion


def test_gate_is_sigmoid_of_linear_concat():
    torch.manual_seed(0)
    gate = GateFusion(3, 2, 4)
    v, e = torch.randn(5, 3), torch.randn(5, 2)
    expected = torch.sigmoid(torch.cat([v, e], 1) @ gate.lin.weight.t() + gate.lin.bias)
    assert torch.allclose(gate(v, e), expected)
    assert ((gate(v, e) > 0) & (gate(v, e) < 1)).all()


def test_concat_and_sum_values():
    torch.manual_seed(0)
    cat = ConcatFusion(3, 2)
    v, e = torch.randn(5, 3), torch.randn(5, 2)
    assert torch.allclose(cat(v, e), torch.cat([v, e], 1) @ cat.lin.weight.t() + cat.lin.bias)
    s = SumFusion(3, 2)
    assert torch.allclose(s(v, e), v + e @ s.proj.weight.t())
    with pytest.raises(ValueError):
        SumFusion(3, 2, 5)


def test_build_fusion_rejects_unknown():
    assert isinstance(build_fusion("gate", 4, 4), GateFusion)
    with pytest.raises(ValueError, match="fusion must be one of"):
        build_fusion("attention", 4, 4)
