import numpy as np
import pytest
import torch

from kgseqgraph.features.reduction import LinearProjection, pca_reduce


def _data(n=200, f=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(4, f, generator=g, dtype=torch.float64)
    scale = torch.tensor([5.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    return (torch.randn(n, 4, generator=g, dtype=torch.float64) * scale) @ basis \
        + 0.01 * torch.randn(n, f, generator=g, dtype=torch.float64) + 7.0


def test_pca_matches_numpy_eigendecomposition():
    x = _data()
    z = pca_reduce(x, 3)
    xc = (x - x.mean(0)).numpy()
    evals, evecs = np.linalg.eigh(np.cov(xc, rowvar=False))
    ref = xc @ evecs[:, ::-1][:, :3]  # top-3 components, numpy reference
    ref = ref / ref.std(ddof=1)
    for j in range(3):  # equal up to the sign convention
        col = ref[:, j] * np.sign(ref[:, j] @ z[:, j].numpy())
        np.testing.assert_allclose(z[:, j].numpy(), col, rtol=1e-6, atol=1e-8)
    # uncorrelated, decreasing variance, unit global std, zero mean
    cov = torch.cov(z.t())
    assert torch.allclose(cov - torch.diag(torch.diag(cov)), torch.zeros(3, 3, dtype=x.dtype),
                          atol=1e-8)
    assert (torch.diag(cov)[:-1] > torch.diag(cov)[1:]).all()
    assert z.std().item() == pytest.approx(1.0) and z.mean(0).abs().max() < 1e-10


def test_pca_whiten_sign_convention_and_lowrank_path():
    x = _data(seed=1)
    w = pca_reduce(x, 3, whiten=True)
    assert torch.allclose(w.std(0), torch.ones(3, dtype=x.dtype))
    exact = pca_reduce(x, 3)
    approx = pca_reduce(x, 3, exact_limit=0, seed=0)  # torch.pca_lowrank, seeded
    assert torch.allclose(exact, approx, atol=1e-5)
    assert torch.equal(approx, pca_reduce(x, 3, exact_limit=0, seed=0))  # deterministic
    # signs follow the loadings, not the SVD: negating the data negates the scores exactly
    assert torch.allclose(pca_reduce(-x, 3), -exact, atol=1e-10)
    assert pca_reduce(x.float(), 2).dtype == torch.float32


def test_pca_validation():
    with pytest.raises(ValueError, match="2-D"):
        pca_reduce(torch.zeros(3), 1)
    with pytest.raises(ValueError, match=r"= \[1, 4\], got 5"):
        pca_reduce(torch.randn(10, 4), 5)


def test_linear_projection():
    proj = LinearProjection(6, 3)
    x = torch.randn(5, 6)
    assert torch.allclose(proj(x), x @ proj.lin.weight.t())  # zero bias at init
    assert "6 -> 3" in repr(proj)
    with pytest.raises(ValueError):
        LinearProjection(0, 3)
