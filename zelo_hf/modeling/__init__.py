"""Reranker models (a package: ``loading``, ``saving``, ``encoding``, ``scoring``): two scoring heads, loading/saving that sentence-transformers understands, fast inference.

Heads (``head=``):

- ``"classification"``: ``AutoModelForSequenceClassification`` with ``num_labels=1`` (BERT/MiniLM encoders, or
  decoders such as Qwen3 with a ``score`` layer on the last non-pad token). The score is the raw logit. Saved
  models carry ``"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}`` in
  ``config.json`` so ``CrossEncoder(path).predict`` returns the same raw logit (its default would be a sigmoid).
- ``"causal"`` (zerank style, ZELO.md step 7): a causal LM reads the chat
  ``<|im_start|>system\\n{query}<|im_end|>\\n<|im_start|>user\\n{document}<|im_end|>\\n<|im_start|>assistant\\n``
  and the score is the logit of the ``"Yes"`` token at the last position. Saved models also get the
  sentence-transformers module files (``modules.json``: ``Transformer(text-generation)`` + ``LogitScore`` with
  ``true_token_id`` = "Yes" and no false token, Identity activation, and ``add_generation_prompt`` in the
  Transformer's ``processing_kwargs``), and a chat template that maps the ``query``/``document`` roles
  sentence-transformers (>= 5.4) gives a pair onto ``system``/``user``. ``CrossEncoder(path)`` then scores
  exactly like :func:`rerank`.

Pairwise models (``task="pairwise"``) use the same heads on (query, document A, document B) and output the logit
that A is more relevant; :class:`PairwiseScorer` turns them into antisymmetrised probabilities.
"""
