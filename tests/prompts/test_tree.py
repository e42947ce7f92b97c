import pytest
import torch

from kgseqgraph.prompts import (KnowledgeTree, PersonalizedPrompt, additive_attention_mask,
                                build_tree_tokens, collate_trees, tree_attention_mask)


def _rows(text: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row.split()[0]] for row in text.strip().splitlines()])


@pytest.fixture
def batch():
    # root: r0 plain, r1 = anchor of history item 0, r2 = anchor of item 1, r3 = </s>
    # item 0 → prompts P1 (2 tokens) and P2 (1 token); item 1 → P3 (2 tokens)
    tree = build_tree_tokens([10, 11, 12, 1], [-1, 0, 1, -1],
                             [(0, [[20, 21], [22]]), (1, [[30, 31]])])
    longer = build_tree_tokens([10] * 10, [-1] * 10, [])
    return collate_trees([tree, longer], pad_id=0)


def test_layout(batch):
    assert batch.input_ids[0].tolist() == [10, 11, 12, 1, 20, 21, 22, 30, 31, 0]
    assert batch.segment_ids[0].tolist() == [0, 0, 0, 0, 1, 1, 2, 3, 3, -1]
    assert batch.item_ids[0].tolist() == [-1, 0, 1, -1, 0, 0, 0, 1, 1, -1]
    assert batch.padding_mask[0].tolist() == [True] * 9 + [False]


def test_default_mask_matches_hand_built_matrix(batch):
    # columns: r0 r1 r2 r3 | P1 P1 P2 | P3 P3 | pad
    expected = _rows("""
        1111111110  r0 sees everything real
        1111111110  r1
        1111111110  r2
        1111111110  r3
        1111111000  P1: root + own prompt + sibling P2, not item 1's P3
        1111111000  P1
        1111111000  P2: root + P1 (same item) + itself
        1111000110  P3: root + itself only
        1111000110  P3
        0000000001  pad sees only itself
    """)
    assert torch.equal(batch.attention_mask()[0], expected)


def test_kbert_style_mask_matches_hand_built_matrix(batch):
    expected = _rows("""
        1111000000  r0 (not an anchor): root only
        1111111000  r1 anchor of item 0: root + item 0's prompts
        1111000110  r2 anchor of item 1: root + item 1's prompt
        1111000000  r3
        0100110000  P1: its anchor + itself (no siblings)
        0100110000  P1
        0100001000  P2: its anchor + itself
        0010000110  P3
        0010000110  P3
        0000000001  pad
    """)
    got = batch.attention_mask(root_sees="anchor", knowledge_sees_root="anchor", siblings=False)
    assert torch.equal(got[0], expected)


def test_root_only_mask(batch):
    got = tree_attention_mask(batch.segment_ids[0], batch.item_ids[0], root_sees="root")
    assert not got[:4, 4:].any() and got[:4, :4].all()
    assert got[4:9, :4].all()  # knowledge still reads the root


def test_truncation_keeps_whole_prompts_and_counts():
    t = build_tree_tokens([5, 1], [-1, -1], [(0, [[7, 7, 7], [8]]), (1, [[9, 9]])],
                          max_tokens=5)
    assert t.input_ids == [5, 1, 7, 7, 7]
    assert t.dropped == 2
    # a later short prompt still fits once a long one was dropped
    t = build_tree_tokens([5, 1], [-1, -1], [(0, [[7, 7, 7, 7], [8]])], max_tokens=4)
    assert t.input_ids == [5, 1, 8] and t.dropped == 1
    with pytest.raises(ValueError, match="max_tokens"):
        build_tree_tokens([1, 2, 3], [-1] * 3, [], max_tokens=2)


def test_additive_mask_values():
    m = torch.tensor([[[True, False], [True, True]]])
    add = additive_attention_mask(m)
    assert add.shape == (1, 1, 2, 2)
    assert add[0, 0, 0, 0] == 0 and add[0, 0, 0, 1] == torch.finfo(torch.float32).min
    with pytest.raises(ValueError):
        additive_attention_mask(m[0])


def test_hf_t5_encoder_applies_the_tree_mask(batch):
    """Independent reference: with root_sees='root', the root's encoder outputs equal T5 run on
    the root tokens alone (T5's position bias is relative, and the root sits at positions 0..3);
    a prompt token's outputs do not depend on another item's prompt tokens."""
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.T5Config(vocab_size=40, d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8,
                      dropout_rate=0.0)
    enc = tf.T5EncoderModel(cfg).eval()
    ids = batch.input_ids[:1]
    mask = tree_attention_mask(batch.segment_ids[:1], batch.item_ids[:1], root_sees="root")
    with torch.no_grad():
        out = enc(input_ids=ids, attention_mask=additive_attention_mask(mask)).last_hidden_state
        ref = enc(input_ids=ids[:, :4]).last_hidden_state
        torch.testing.assert_close(out[:, :4], ref, rtol=1e-5, atol=1e-6)
        # change item 1's prompt (positions 7, 8): item 0's prompt tokens (4..6) do not move
        other = ids.clone()
        other[0, 7:9] = torch.tensor([33, 34])
        out2 = enc(input_ids=other, attention_mask=additive_attention_mask(mask)).last_hidden_state
        torch.testing.assert_close(out2[:, :7], out[:, :7], rtol=0, atol=0)
        assert (out2[:, 7:9] - out[:, 7:9]).abs().max() > 1e-4
        # under full attention they would move
        full = enc(input_ids=ids).last_hidden_state
        full2 = enc(input_ids=other).last_hidden_state
        assert (full2[:, 4:7] - full[:, 4:7]).abs().max() > 1e-4


def test_personalized_prompt():
    p = PersonalizedPrompt()
    assert p.render(["A", "B", "C"], "7") == \
        "User 7 has watched A , B , C and will watch <extra_id_0> next."
    p = PersonalizedPrompt("{history} -> {mask}", separator="", mask_token="[mask]")
    assert p.render(["A", "B"]) == "A B -> [mask]"
    assert p.parts() == ("", "-> [mask]")
    with pytest.raises(ValueError, match="history"):
        PersonalizedPrompt("User {user} will watch {mask}")
    with pytest.raises(ValueError, match="placeholder"):
        PersonalizedPrompt("{history} {mask} {foo}")


def test_knowledge_tree_text():
    t = KnowledgeTree("root", [("A", ["a1", "a2"]), ("B", ["b1"])])
    assert str(t).splitlines() == ["root", "├── A", "│   ├── a1", "│   └── a2", "└── B",
                                   "    └── b1"]


def test_mask_argument_errors(batch):
    with pytest.raises(ValueError, match="root_sees"):
        batch.attention_mask(root_sees="some")
    with pytest.raises(ValueError, match="knowledge_sees_root"):
        batch.attention_mask(knowledge_sees_root="none")
    with pytest.raises(ValueError, match="same shape"):
        tree_attention_mask(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
