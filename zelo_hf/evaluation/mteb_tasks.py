"""MTEB custom retrieval tasks for local BEIR folders and bundled data, and running MTEB on them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..data import RetrievalData
from ..utils import require
from .metrics import DEFAULT_METRICS, parse_metrics
from .reranking import candidate_dicts
from .scorers import load_scorer


def _task_metadata(name: str, split: str, description: str):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name=name,
        description=description,
        reference=None,
        dataset={"path": f"local/{name}", "revision": "local"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation="",
    )


def make_mteb_task(
    data,
    top_ranked: dict[str, list[str]] | None = None,
    name: str | None = None,
    corpus_ids: Iterable[str] | None = None,
):
    """An MTEB retrieval task over a :class:`~zelo_hf.data.RetrievalData` (a local BEIR folder, bundled data).

    MTEB's own loader reads the Hub, so the task overrides ``load_data`` and builds the split in memory.
    Documents are the toolkit's ``doc_text`` (title and text) so MTEB reads exactly what the rerankers read.
    ``top_ranked`` (``{query_id: [doc_id, ...]}``) turns it into a reranking task: cross-encoders rescore these
    lists, bi-encoders rank them by cosine. ``corpus_ids`` restricts the corpus (e.g. to the candidates).
    """
    require("mteb", "eval", "MTEB evaluation")
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    task_name = name or f"ZeloLocal{data.name.title().replace('-', '').replace('_', '')}"
    metadata = _task_metadata(task_name, data.split, f"Local BEIR folder {data.name!r}, split {data.split!r}.")
    ids = sorted(set(corpus_ids)) if corpus_ids is not None else list(data.corpus)
    queries = {q: t for q, t in data.queries.items() if q in data.qrels and (top_ranked is None or q in top_ranked)}

    class LocalBeirRetrieval(AbsTaskRetrieval):
        # a class attribute: MTEB's `unload_data` drops instance-level metadata
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            corpus = Dataset.from_dict({"id": ids, "text": [data.doc_text(i) for i in ids], "title": [""] * len(ids)})
            query_ds = Dataset.from_dict({"id": list(queries), "text": list(queries.values())})
            split = {"corpus": corpus, "queries": query_ds, "relevant_docs": {q: dict(data.qrels[q]) for q in queries}}
            split["top_ranked"] = {q: list(top_ranked[q]) for q in queries} if top_ranked is not None else None
            self.dataset = {"default": {data.split: split}}
            self.data_loaded = True

    LocalBeirRetrieval.metadata = metadata
    LocalBeirRetrieval.__name__ = task_name
    return LocalBeirRetrieval()


def retrieval_data_from_mteb(task, split: str = "test", subset: str = "default"):
    """The loaded split of an MTEB retrieval task as :class:`~zelo_hf.data.RetrievalData` (to build a first stage)."""
    if not task.data_loaded:
        task.load_data()
    task.convert_v1_dataset_format_to_v2()
    if subset not in task.dataset or split not in task.dataset[subset]:
        available = {s: list(v) for s, v in task.dataset.items()}
        raise KeyError(f"task {task.metadata.name!r} has no subset/split {subset!r}/{split!r} (has {available}).")
    part = task.dataset[subset][split]
    titles = part["corpus"]["title"] if "title" in part["corpus"].column_names else [""] * len(part["corpus"])
    corpus = {
        str(i): {"title": t or "", "text": x or ""}
        for i, t, x in zip(part["corpus"]["id"], titles, part["corpus"]["text"])
    }
    queries = {str(i): q for i, q in zip(part["queries"]["id"], part["queries"]["text"])}
    qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in part["relevant_docs"].items()}
    return RetrievalData(name=task.metadata.name, corpus=corpus, queries=queries, qrels=qrels, split=split)


def add_first_stage(task, candidates, split: str = "test", subset: str = "default"):
    """Make a loaded MTEB retrieval task a reranking task over ``candidates`` (its ``top_ranked``)."""
    if not task.data_loaded:
        task.load_data()
    task.convert_v1_dataset_format_to_v2()
    task.dataset[subset][split]["top_ranked"] = top_ranked_from_candidates(candidates)
    return task


def top_ranked_from_candidates(candidates) -> dict[str, list[str]]:
    """``{query_id: [doc_id, ...]}`` in first-stage order, MTEB's ``top_ranked`` for reranking tasks."""
    return {str(r["query_id"]): [str(d) for d in r["doc_ids"]] for r in candidate_dicts(candidates)}


def run_mteb(model: Any, task, split: str = "test", batch_size: int = 32, prediction_folder: str | Path | None = None):
    """Evaluate ``model`` on an MTEB task object or task name (online for names) and return that split's scores.

    ``model`` is a ``CrossEncoder``, a ``SentenceTransformer`` or a model path (loaded with :func:`load_scorer`).
    Returns MTEB's score dict (``ndcg_at_10``, ``recall_at_100``, ``mrr_at_10``, ... rounded to 5 decimals by MTEB).
    """
    require("mteb", "eval", "MTEB evaluation")
    import mteb

    if isinstance(model, (str, Path)):
        model = load_scorer(model)
    if isinstance(task, str):
        task = mteb.get_task(task, eval_splits=[split])
    result = mteb.evaluate(
        model,
        task,
        cache=None,
        encode_kwargs={"batch_size": batch_size},
        prediction_folder=str(prediction_folder) if prediction_folder else None,
        show_progress_bar=False,
    )
    task_result = result.task_results[0]
    return dict(task_result.scores[split][0])


def mteb_metrics(scores: dict[str, Any], metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Pick our metric names (``ndcg@10``) out of an MTEB score dict (``ndcg_at_10``)."""
    out = {}
    for m in parse_metrics(metrics):
        key = {"p": "precision"}.get(m.family, m.family) + f"_at_{m.k}"
        if key not in scores:
            raise KeyError(f"MTEB scores have no {key!r} for metric {m.name!r} (has e.g. {sorted(scores)[:8]}).")
        out[m.name] = float(scores[key])
    return out
