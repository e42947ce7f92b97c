"""KP4SR's masks against the semantics of the authors' ``get_input`` (``src/pretrain_data.py``):
a token of node n sees its parent's tokens, the tokens of every child of its parent (siblings and
itself) and its own children's tokens; the root sees itself; item nodes are root tokens."""
import random

import torch

from kgseqgraph.nn.masks import additive_attention_mask, cross_attention_mask, tree_attention_mask
from kgseqgraph.prompts.tree import collate_trees, layout_tree


def authors_visible_matrix(root_len, anchors, prompts, total):
    """An independent transcription of the visible-matrix rule, node by node, as the authors
    build it (nodes with parent/children lists; rows OR-ed over every node a token belongs to)."""
    nodes = [{"pos": list(range(root_len)), "parent": None, "children": []}]
    for positions in anchors:
        nodes.append({"pos": list(positions), "parent": 0, "children": []})
        nodes[0]["children"].append(len(nodes) - 1)
    start = root_len
    for parent, length in prompts:
        nodes.append({"pos": list(range(start, start + length)), "parent": parent,
                      "children": []})
        nodes[parent]["children"].append(len(nodes) - 1)
        start += length
    m = torch.zeros(total, total, dtype=torch.bool)
    for node in nodes:
        if node["parent"] is not None:
            par = nodes[node["parent"]]
            visible = list(par["pos"])
            for c in par["children"]:
                visible += nodes[c]["pos"]
        else:
            visible = list(node["pos"])
        for c in node["children"]:
            visible += nodes[c]["pos"]
        for p in node["pos"]:
            m[p, visible] = True
    return m


def _mask(root_len, anchors, prompts):
    tree = layout_tree(list(range(root_len)), anchors,
                       [(par, [100] * n) for par, n in prompts])
    batch = collate_trees([tree], pad_id=0)
    return tree_attention_mask(batch.node, batch.parent, batch.in_root, batch.padding_mask)[0]


def test_tree_mask_hand_built():
    # root: 7 tokens, item 1 spelled by token 2, item 2 by tokens 4-5;
    # p1 (node 3, 2 tokens) and p2 (node 4) under item 1, p3 (node 5, 2 tokens) under item 2,
    # 2-hop p4 (node 6) and p5 (node 7) under p1.
    m = _mask(7, [[2], [4, 5]], [(1, 2), (1, 1), (2, 2), (3, 1), (3, 1)])
    root = set(range(7))
    expected = {**{r: root for r in (0, 1, 3, 6)},
                2: root | {7, 8, 9},                 # item 1: root + its 1-hop prompts
                4: root | {10, 11}, 5: root | {10, 11},
                7: {2, 7, 8, 9, 12, 13}, 8: {2, 7, 8, 9, 12, 13},   # p1: item 1, siblings, kids
                9: {2, 7, 8, 9},                     # p2
                10: {4, 5, 10, 11}, 11: {4, 5, 10, 11},             # p3
                12: {7, 8, 12, 13}, 13: {7, 8, 12, 13}}             # p4, p5: parent + siblings
    got = {q: set(torch.nonzero(m[q]).view(-1).tolist()) for q in range(14)}
    assert got == expected


def test_tree_mask_matches_the_authors_rule_on_random_trees():
    rng = random.Random(0)
    for _ in range(30):
        root_len = rng.randint(6, 12)
        n_items = rng.randint(1, 3)
        spots = rng.sample(range(root_len), n_items * 2)
        anchors = [sorted(spots[2 * j: 2 * j + rng.randint(1, 2)]) for j in range(n_items)]
        prompts = []
        for _ in range(rng.randint(0, 8)):
            parent = rng.randint(1, n_items + len(prompts))
            prompts.append((parent, rng.randint(1, 3)))
        total = root_len + sum(n for _, n in prompts)
        expected = authors_visible_matrix(root_len, anchors, prompts, total)
        assert torch.equal(_mask(root_len, anchors, prompts), expected)


def test_padding_cross_mask_and_additive():
    trees = [layout_tree([1, 2, 3], [[1]], [(1, [9, 9])]), layout_tree([1, 2], [[0]], [])]
    batch = collate_trees(trees, pad_id=0)
    m = batch.attention_mask(tree=True)
    assert m.shape == (2, 5, 5)
    assert not m[1, :2, 2:].any()                     # padding keys invisible to real queries
    assert torch.equal(m[1, 2:, 2:], torch.eye(3, dtype=torch.bool))  # padding sees itself only
    full = batch.attention_mask(tree=False)           # the ablation: every real token visible
    assert full[0].all() and full[1, :2, :2].all() and not full[1, :2, 2:].any()
    assert cross_attention_mask(batch.in_root, batch.padding_mask).tolist() == [
        [True, True, True, False, False], [True, True, False, False, False]]
    assert batch.cross_mask(root_only=False).tolist() == batch.padding_mask.tolist()
    bias = additive_attention_mask(m)
    assert bias.shape == (2, 1, 5, 5) and bias[0, 0, 0, 0] == 0
    assert bias[1, 0, 0, 3] == torch.finfo(torch.float32).min
