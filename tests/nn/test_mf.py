import torch
import torch.nn.functional as F

from kgseqgraph.nn.mf import BPRMF, sample_bpr_negatives


def test_bpr_loss_by_hand():
    torch.manual_seed(0)
    mf = BPRMF(3, 5, dim=4, reg_weight=0.1)
    u, i, j = torch.tensor([0, 2]), torch.tensor([1, 4]), torch.tensor([3, 0])
    p, qi, qj = mf.user.weight[u], mf.item.weight[i], mf.item.weight[j]
    diff = (p * qi).sum(1) - (p * qj).sum(1)
    reg = (p.pow(2).sum(1) + qi.pow(2).sum(1) + qj.pow(2).sum(1)).mean() / 2
    expected = -F.logsigmoid(diff).mean() + 0.1 * reg
    torch.testing.assert_close(mf.loss(u, i, j), expected)
    torch.testing.assert_close(mf(u, i), (p * qi).sum(1))


def test_negatives_avoid_seen_items():
    users = torch.tensor([0, 0, 0, 1])
    items = torch.tensor([0, 1, 2, 3])
    seen = torch.unique(users * 5 + items)
    u = torch.tensor([0] * 500 + [1] * 500)
    neg = sample_bpr_negatives(u, 5, seen, torch.Generator().manual_seed(0))
    assert set(neg[:500].tolist()) == {3, 4}
    assert set(neg[500:].tolist()) == {0, 1, 2, 4}


def test_bpr_training_ranks_positives_first():
    torch.manual_seed(0)
    mf = BPRMF(4, 6, dim=8)
    users = torch.tensor([0, 1, 2, 3])
    items = torch.tensor([0, 1, 2, 3])
    seen = torch.unique(users * 6 + items)
    opt = torch.optim.Adam(mf.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        loss = mf.loss(users, items, sample_bpr_negatives(users, 6, seen, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores = mf.user.weight @ mf.item.weight.t()
    assert scores.argmax(1).tolist() == [0, 1, 2, 3]
