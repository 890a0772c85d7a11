"""Rerank-a-first-stage evaluation (a package: ``metrics``, ``scorers``, ``reranking``, ``mteb_tasks``, ``reports``): NDCG@10, Recall@100, MRR@10 with pytrec_eval, and MTEB tasks for BEIR folders.

Conventions (those of ``trec_eval``, which ``pytrec_eval`` wraps and MTEB calls):

* **Gains are linear**: a document of grade ``g`` contributes ``g / log2(rank + 1)`` to DCG, and the ideal DCG
  sorts the judged grades of the query. The bundled data README's reference BM25 used exponential gains
  ``2^g - 1``; on binary qrels (SciFact) the two agree, on graded ones (Cranfield, 0-4) they differ, so compare
  Cranfield figures only with figures computed the same way.
* A document is relevant for recall and MRR when its grade is ``>= 1`` (grade 0 = judged non-relevant).
* Ties in a run are broken as ``trec_eval`` does: equal scores are ordered by document id, descending.
* Aggregates are means over the queries of the run that have at least one relevant judgment (MTEB drops the
  other queries too); a query of the run whose candidate list is empty scores 0, it is not skipped.

A *run* is ``{query_id: {doc_id: score}}``; *qrels* are ``{query_id: {doc_id: grade}}``.
"""
