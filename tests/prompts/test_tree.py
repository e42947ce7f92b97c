"""The knowledge tree's layout (node ids, parents, breadth-first prompts, budget) and the
personalised prompts. The masks over it are pinned in tests/nn/test_masks.py."""
import pytest
import torch

from kgseqgraph.prompts import (EVAL_TEMPLATE, TRAIN_TEMPLATES, PersonalizedPrompt, collate_trees,
                                layout_tree, render_tree)


def test_layout_nodes_parents_and_budget():
    tree = layout_tree([10, 11, 12, 13], [[1], [2, 3]],
                       [(1, [20, 21]), (2, [22]), (3, [23, 24, 25]), (5, [26]), (1, [27])],
                       max_tokens=9)
    # root tokens: node 0 (parent -1), item nodes 1 and 2 (parent 0); prompt p gets node 3 + p
    assert tree.input_ids == [10, 11, 12, 13, 20, 21, 22, 27]
    assert tree.node == [0, 1, 2, 2, 3, 3, 4, 7]
    assert tree.parent == [-1, 0, 0, 0, 1, 1, 2, 1]
    assert tree.in_root == [True] * 4 + [False] * 4
    # node 5 (3 tokens) did not fit, so its child (node 6) went too; node 7 (1 token) fits
    assert (tree.num_prompts, tree.dropped) == (3, 2)
    with pytest.raises(ValueError, match="max_tokens"):
        layout_tree([1] * 5, [], [], max_tokens=4)
    with pytest.raises(ValueError, match="before it"):
        layout_tree([1, 2], [[0]], [(2, [5])])
    with pytest.raises(ValueError, match="outside the root"):
        layout_tree([1, 2], [[2]], [])


def test_collate_and_render():
    trees = [layout_tree([1, 2, 3], [[1]], [(1, [7, 8]), (2, [9])]), layout_tree([4], [[0]], [])]
    batch = collate_trees(trees, pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 7, 8, 9], [4, 0, 0, 0, 0, 0]]
    assert batch.node[1].tolist() == [1, -2, -2, -2, -2, -2]
    assert batch.padding_mask.sum(1).tolist() == [6, 1]
    text = render_tree(trees[0], lambda ids: " ".join(map(str, ids)))
    assert text.splitlines() == ["1 2 3", "[2]", "  - 7 8", "    - 9"]


def test_personalized_prompts():
    p = PersonalizedPrompt("User {user} watched {history} ; next {mask} .")
    assert p.parts("u7") == ("User u7 watched", "; next <extra_id_0> .")
    assert len(TRAIN_TEMPLATES) >= 5 and EVAL_TEMPLATE not in TRAIN_TEMPLATES
    for t in (*TRAIN_TEMPLATES, EVAL_TEMPLATE):
        PersonalizedPrompt(t)
    with pytest.raises(ValueError, match="exactly once"):
        PersonalizedPrompt("no history here {mask}")
    with pytest.raises(ValueError, match="unknown placeholder"):
        PersonalizedPrompt("{history} {mask} {age}")
