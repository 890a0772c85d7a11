"""Judging (ZELO.md steps 2-3): pairs -> judges -> cache -> a preference set. One concept per module:

* ``votes`` -- :class:`Comparison` (what is asked, ids included) and :class:`Vote` (the answer); ``combine_votes``.
* ``base`` -- the judge interface (:class:`Judge`: one method, ``acompare_many``) and :class:`EnsembleJudge`.
* ``litellm_judge`` -- :class:`LiteLLMJudge`; ``limits`` (rate limiter, AIMD concurrency, circuit breaker) and
  ``retry`` (error kinds, backoff) are its call policy; ``pricing`` its tokens and dollars (dry run, batch prices).
* ``batch`` -- the provider batch path (``zelo judge --batch``).
* ``local`` -- :class:`SimulatedJudge`, :class:`PairwiseModelJudge`.
* ``factory`` -- the one ``build_judge`` and the one default cache path (``judge_cache_path``).
* ``cache`` -- :class:`JudgmentCache` (SQLite WAL) and ``cache_key``, the one place a key is built.
* ``prompts`` -- the pairwise prompts and answer parsers.
* ``pairs`` -- what to judge (comparison graphs, pairs datasets); ``preferences`` -- ``judge_pairs``;
  ``preference_set`` -- the judged set's rows, summary and Hub-ready folder.
"""
