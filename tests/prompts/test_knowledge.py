import json

import pandas as pd
import pytest

from kgseqgraph.data import build_collaborative_kg
from kgseqgraph.prompts import (DEFAULT_TEMPLATES, FREEBASE_FILM_TEMPLATES, EntityNames,
                                fallback_template, knowledge_prompts, load_templates,
                                render_template, resolve_templates, validate_template)
from kgseqgraph.testing import require_data


@pytest.fixture(scope="module")
def graph():
    inter = pd.DataFrame({"user": [0, 0, 1], "item": ["A", "B", "A"], "time": [1, 2, 3]})
    triples = pd.DataFrame([
        ("fa", "film.film.genre", "g1"),
        ("g1", "film.film_genre.films_in_this_genre", "fa"),   # inverse of the line above
        ("d1", "film.director.film", "fa"),
        ("fa", "film.film.sequel", "fb"),                       # item → item
        ("fa", "film.film.actor", "a2"),
        ("fa", "film.film.actor", "a1"),
        ("fb", "film.film.actor", "a1"),                        # a1 has degree 2: first for A
        ("fb", "film.film.genre", "g1"),
    ], columns=["head", "relation", "tail"])
    links = pd.DataFrame({"item": ["A", "B"], "entity": ["fa", "fb"]})
    return build_collaborative_kg(inter, triples, links, {"A": "Alpha", "B": "Beta"})


def test_one_template_per_ml100k_relation():
    rels = ["film.film.genre", "film.film_genre.films_in_this_genre", "film.film.directed_by",
            "film.director.film", "film.film.actor", "film.actor.film", "film.film.written_by",
            "film.writer.film", "film.film.subjects", "film.film_subject.films",
            "film.film.sequel", "film.film.prequel", "film.film.produced_by",
            "film.producer.film", "film.film.language", "film.film.country", "film.film.rating",
            "film.content_rating.film", "film.film.production_companies",
            "film.production_company.films", "film.film.cinematography",
            "film.cinematographer.film", "film.film.award_won", "film.film.award_nomination"]
    assert sorted(FREEBASE_FILM_TEMPLATES) == sorted(rels)
    assert FREEBASE_FILM_TEMPLATES["film.film.directed_by"] == "[X] is directed by [Y]."
    assert DEFAULT_TEMPLATES["has_attribute"] == "[X] has attribute [Y]."


def test_prompts_of_hand_built_graph(graph):
    kp = knowledge_prompts(graph, max_per_item=10)
    # round-robin over relations in template order: genre, director.film, actor, sequel; then
    # the second actor. a1 (2 films) before a2 (1 film).
    assert kp[0] == ["The genre of Alpha is genre g1.", "director d1 directed Alpha.",
                     "Alpha stars actor a1.", "The sequel of Alpha is Beta.",
                     "Alpha stars actor a2."]
    assert kp[1] == ["The genre of Beta is genre g1.", "Beta stars actor a1.",
                     "The sequel of Alpha is Beta."]
    assert kp.relations[:2] == ["film.film.genre", "film.director.film"]
    assert kp.report["inverse_duplicates_dropped"] == 1
    assert kp.report["prompts_truncated"] == 0 and kp.report["prompts_kept"] == 8


def test_budget_truncates_and_counts(graph):
    kp = knowledge_prompts(graph, max_per_item=2)
    assert kp[0] == ["The genre of Alpha is genre g1.", "director d1 directed Alpha."]
    assert kp.report["prompts_truncated"] == 3 + 1
    assert kp.report["items_truncated"] == 2
    assert kp.report["triples_available"] == 8


def test_entity_names_and_item_names_are_inputs(graph):
    kp = knowledge_prompts(graph, max_per_item=1, entity_names={"g1": "Comedy"},
                           item_names=["<item_0>", "<item_1>"])
    assert kp[0] == ["The genre of <item_0> is Comedy."]
    names = EntityNames(graph, {"fa": "The Alpha Film"})
    assert names.item(0) == "The Alpha Film" and names.item(1) == "Beta"


def test_two_hop(graph):
    kp = knowledge_prompts(graph, max_per_item=3, two_hop=1)
    assert kp.hops[:3] == [1, 1, 2]
    # A's genre g1 also holds B: (B, film.film.genre, g1); A itself is never a 2-hop tail
    assert kp[0][2] == "The genre of Beta is genre g1."
    assert kp.report["two_hop_kept"] == 2


def test_user_templates_relation_filter_and_fallback(graph):
    kp = knowledge_prompts(graph, {"film.film.actor": "[Y] plays in [X]."},
                           relations=["film.film.actor"], max_per_item=5)
    assert kp[0] == ["actor a1 plays in Alpha.", "actor a2 plays in Alpha."]
    kp = knowledge_prompts(graph, {}, max_per_item=1)
    # no templates: fallback "[X] <last path segment> [Y].", relations in alphabetical order
    assert kp[0] == ["director d1 film Alpha."]
    assert kp.report["relations_without_template"] == 5
    with pytest.raises(ValueError, match="no template"):
        knowledge_prompts(graph, {}, missing_template="error")
    with pytest.raises(ValueError, match="not in the graph"):
        knowledge_prompts(graph, relations=["music.album"])


def test_template_helpers(tmp_path):
    assert render_template("[X] likes [Y]", "[Y]", "b") == "[Y] likes b"
    assert fallback_template("film.film.music_by") == "[X] music by [Y]."
    with pytest.raises(ValueError, match=r"\[Y\]"):
        validate_template("r", "[X] only")
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"r": "[X] r [Y]", "s": "no placeholders"}))
    with pytest.raises(ValueError, match="relation 's'"):
        load_templates(p)
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_templates(p)
    t, without = resolve_templates({"film_film_genre": "film.film.genre", "x_y": "x.y"},
                                   missing="skip")
    assert t == {"film_film_genre": "The genre of [X] is [Y]."} and without == ["x_y"]


@pytest.mark.realdata
def test_kp4sr_books_templates_load():
    path = require_data("kp4sr/relation2template.json")
    t = load_templates(path)
    assert len(t) == 16
    assert t["book.written_work.author"] == "The author of [X] is [Y]."
    assert render_template(t["book.author.works_written"], "Tolkien", "The Hobbit") == \
        "Tolkien wrote The Hobbit."


@pytest.mark.realdata
def test_ml100k_toy_story_prompts(tmp_path, monkeypatch):
    root = require_data("ml-100k/ml-100k.kg", "ml-100k/ml-100k.link")
    from kgseqgraph.datasets.registry import load_dataset

    monkeypatch.setenv("KGSEQGRAPH_CACHE", str(tmp_path))
    data = load_dataset("ml-100k", root.parent)
    toy = data["item"].raw_id.index(1)
    assert data["item"].title[toy] == "Toy Story"
    kp = knowledge_prompts(data, max_per_item=100)
    prompts = kp[toy]
    # ml-100k.kg: m.0dyb1 (Toy Story) film.film.directed_by m.04jspq, and the inverse
    # film.director.film triple, which is de-duplicated
    assert "Toy Story is directed by director m.04jspq." in prompts
    assert not any("directed Toy Story" in p for p in prompts)
    genres = {p for p in prompts if p.startswith("The genre of Toy Story is genre ")}
    assert {g.split()[-1].rstrip(".") for g in genres} == {
        "m.01hmnh", "m.03k9fj", "m.0556j8", "m.05p553", "m.0hcr", "m.0hqxf"}
    named = knowledge_prompts(data, max_per_item=2, entity_names={"m.04jspq": "John Lasseter"})
    assert "Toy Story is directed by John Lasseter." in named[toy]
    assert named.report["prompts_truncated"] > 0


def test_render_triples_of_a_relational_view(graph):
    from kgseqgraph.data import relational_view
    from kgseqgraph.prompts import render_triples

    view = relational_view(graph, ("item", "entity"), include_reverse=False)
    texts = render_triples(graph, view, item_names=["1", "2"])
    rendered = {(int(h), view.relation_names[int(r)], int(t)): s
                for h, r, t, s in zip(view.head, view.relation, view.tail, texts)}
    sane = {v: k for k, v in graph.relation_names.items()}
    assert rendered[(0, sane["film.film.sequel"], 1)] == "The sequel of 1 is 2."
    assert "The genre of 1 is genre g1." in texts and "director d1 directed 1." in texts
    assert len(texts) == view.num_edges
    both = relational_view(graph, ("item", "entity"))     # rev_ edges state the original fact
    back = render_triples(graph, both, item_names=["1", "2"])
    rev = [s for r, s in zip(both.relation.tolist(), back)
           if both.relation_names[r] == "rev_" + sane["film.film.sequel"]]
    assert rev == ["The sequel of 1 is 2."]
