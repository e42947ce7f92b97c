"""Suite-wide settings: one torch thread.

The suite runs many small models; on a 2-core machine torch's intra-op threads spin and
contend (tiny ops were measured 10-50x slower with 2 threads under load), and one thread also
makes results independent of the machine's core count.
"""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts on one thread, whatever an earlier test (or a ``TrainConfig`` with
    ``num_threads``) set."""
    torch.set_num_threads(1)
    yield
