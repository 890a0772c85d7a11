"""The reranker-in-the-loop round's pair choice (``zelo_hf.loop``): only disagreements at the top, never a judged pair,
never more than the per-query budget; the random control takes as many pairs."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from zelo_hf.loop import disagreement_utility, judged_pairs, loop_pairs


def _labels(scores: list[list[float]]) -> Dataset:
    return Dataset.from_dict({
        "query_id": [f"q{q}" for q in range(len(scores))], "query": [f"query {q}" for q in range(len(scores))],
        "doc_ids": [[f"d{i}" for i in range(len(s))] for s in scores],
        "docs": [[f"text {q}-{i}" for i in range(len(s))] for q, s in enumerate(scores)], "score": scores,
    })


def test_agreeing_rankings_have_nothing_to_judge():
    s = np.arange(12.0)
    assert not disagreement_utility(s, 2 * s + 1, top_k=5).any()  # same order, other scale
    assert not loop_pairs(_labels([list(s)]), [list(s)], {}, pairs_per_query=10, top_k=5)


def test_the_worst_swap_at_the_top_is_judged_first():
    labels = np.arange(10.0)[::-1].copy()  # d0 best ... d9 worst
    model = labels.copy()
    model[[0, 9]] = model[[9, 0]]  # the model puts the labels' worst first and their best last
    u = disagreement_utility(model, labels, top_k=3)
    assert np.allclose(u, u.T) and (u >= 0).all()
    assert np.unravel_index(np.argmax(u), u.shape) in ((0, 9), (9, 0))
    # a pair both rankings order alike is worth nothing, however high
    assert u[1, 2] == 0 and u[0, 5] == 0  # d0 vs d5: neither is in the model's top 3
    pairs = loop_pairs(_labels([list(labels)]), [list(model)], {}, pairs_per_query=1, top_k=3)
    assert [(p.doc_a_id, p.doc_b_id) for p in pairs] == [("d0", "d9")]


def test_judged_pairs_are_never_chosen_and_the_budget_holds():
    rng = np.random.default_rng(0)
    label = [list(rng.normal(size=15)) for _ in range(20)]
    model = [list(np.asarray(s) + rng.normal(scale=1.5, size=15)) for s in label]
    judged_rows = {"query_id": [], "doc_a_id": [], "doc_b_id": []}
    for q in range(20):  # some judged pairs, in either order
        for a, b in rng.integers(0, 15, size=(30, 2)):
            if a != b:
                judged_rows["query_id"].append(f"q{q}")
                judged_rows["doc_a_id"].append(f"d{a}")
                judged_rows["doc_b_id"].append(f"d{b}")
    judged = judged_pairs(Dataset.from_dict(judged_rows))
    chosen = loop_pairs(_labels(label), model, judged, pairs_per_query=6, top_k=5)
    control = loop_pairs(_labels(label), model, judged, pairs_per_query=6, top_k=5, selection="random", seed=1)
    per_query: dict[str, int] = {}
    for p in chosen:
        assert frozenset((p.doc_a_id, p.doc_b_id)) not in judged[p.query_id]
        per_query[p.query_id] = per_query.get(p.query_id, 0) + 1
        q, a, b = int(p.query_id[1:]), int(p.doc_a_id[1:]), int(p.doc_b_id[1:])
        assert disagreement_utility(model[q], label[q], 5)[a, b] > 0  # a real disagreement
    assert max(per_query.values()) <= 6 and sum(per_query.values()) > 20
    assert len({(p.query_id, p.doc_a_id, p.doc_b_id) for p in chosen}) == len(chosen)  # no pair twice
    control_per_query: dict[str, int] = {}
    for p in control:
        assert frozenset((p.doc_a_id, p.doc_b_id)) not in judged[p.query_id]
        control_per_query[p.query_id] = control_per_query.get(p.query_id, 0) + 1
    assert control_per_query == per_query  # the control spends the same pairs, query by query
    assert {(p.query_id, p.doc_a_id, p.doc_b_id) for p in control} != {(p.query_id, p.doc_a_id, p.doc_b_id)
                                                                       for p in chosen}


def test_bad_loop_input_names_the_field():
    labels = _labels([[1.0, 0.0, 2.0]])
    with pytest.raises(ValueError, match="selection.*one of"):
        loop_pairs(labels, [[0.0, 1.0, 2.0]], {}, 2, selection="greedy")
    with pytest.raises(ValueError, match="model_scores.*one list per label-set row"):
        loop_pairs(labels, [], {}, 2)
    with pytest.raises(ValueError, match="one length per query"):
        loop_pairs(labels, [[0.0, 1.0]], {}, 2)
    with pytest.raises(ValueError, match="must be finite"):
        loop_pairs(labels, [[0.0, float("nan"), 1.0]], {}, 2)
    with pytest.raises(ValueError, match="pairs_per_query"):
        loop_pairs(labels, [[0.0, 1.0, 2.0]], {}, 0)
