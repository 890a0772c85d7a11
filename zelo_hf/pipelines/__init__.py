"""The pipelines behind ``recipes/`` (one module per recipe) and ``zelo zerank|pairwise|zembed``.

Each module has ``HELP``, ``make_parser(subparsers=None)`` (a ``TrlParser``: YAML ``--config`` sets values, flags
override them) and ``main(script_args, training_args, model_args)``, as trl's ``trl/scripts/*.py``:

* ``zerank``: the zELO reranker end to end as resumable stages (``zerank_args``, ``zerank_stages``,
  ``zerank_training``, ``zerank_evaluation``; the stage engine is ``zelo_hf.stages``).
* ``pairwise``: the pairwise small model on its own, from a preference set.
* ``zembed``: a bi-encoder distilled from a reranker's scores or a label set.

Nothing generic lives here: a pipeline composes the library's steps, and no library module imports a pipeline.
"""
