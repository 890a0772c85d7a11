"""Every dataset contract of the toolkit in one place (docs/design.md, "Data schemas"), with the one column checker
and the text / number checks that every step runs on its input before doing any work.

The data flow: a **candidate set** (one row per query) -> judged pairs, the **preference set** (one row per pair;
cross-query pairs add ``query_b_id`` / ``query_b``) -> **grouped preferences** (one row per query) -> the **label
set** (grouped columns + the fit's columns, + ``offset`` / ``score`` after calibration) -> the **pointwise set**
(one row per query-document).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "CANDIDATE_COLUMNS", "PAIR_COLUMNS", "PREFERENCE_COLUMNS", "CROSS_QUERY_COLUMNS", "CROSS_FIT_COLUMNS",
    "PREFERENCE_ID_COLUMNS", "TEXT_TABLES", "TEXT_OF_ID",
    "ANCHOR_COLUMNS", "GROUPED_COLUMNS", "GROUPED_FIT_COLUMNS", "FIT_COLUMNS", "LABEL_COLUMNS", "POINTWISE_COLUMNS",
    "candidate_features", "vote_features", "preference_features", "cross_pair_features",
    "require_columns", "check_texts", "check_numbers", "check_probabilities",
]  # fmt: skip

# candidate set: + ``first_stage_scores`` (descending) and, when qrels are known (evaluation only), ``grades``
CANDIDATE_COLUMNS = ("query_id", "query", "doc_ids", "docs")
# a pair to judge (within a query; a cross-query pair adds CROSS_QUERY_COLUMNS: doc_b answers query_b)
PAIR_COLUMNS = ("query_id", "query", "doc_a_id", "doc_a", "doc_b_id", "doc_b")
# a judged pair: + ``votes`` (one struct per judge, see ``vote_features``)
PREFERENCE_COLUMNS = (*PAIR_COLUMNS, "prob_a")
CROSS_QUERY_COLUMNS = ("query_b_id", "query_b")
# a judged preference set as saved (#12): pair rows hold ids only (what grouping and fitting read); each text is
# stored once in a companion table (table name -> its id and text columns), as BEIR keeps corpus and queries apart
PREFERENCE_ID_COLUMNS = ("query_id", "doc_a_id", "doc_b_id", "prob_a")
TEXT_TABLES = {"queries": ("query_id", "query"), "documents": ("doc_id", "doc")}
# id column of a pair row -> (its text column, the companion table holding that text)
TEXT_OF_ID = {"query_id": ("query", "queries"), "doc_a_id": ("doc_a", "documents"),
              "doc_b_id": ("doc_b", "documents"), "query_b_id": ("query_b", "queries")}
# what the cross-query calibration fit reads of a judged cross-query preference set
CROSS_FIT_COLUMNS = ("query_id", "doc_a_id", "query_b_id", "doc_b_id", "prob_a")
# pointwise relevance votes that pin score 0 to the relevance boundary (calibration's optional anchors)
ANCHOR_COLUMNS = ("query_id", "doc_id", "prob_relevant")
# grouped preferences (one row per query): pair_a / pair_b index into doc_ids
GROUPED_COLUMNS = ("query_id", "query", "doc_ids", "docs", "pair_a", "pair_b", "prob_a")
GROUPED_FIT_COLUMNS = ("query_id", "doc_ids", "pair_a", "pair_b", "prob_a")  # what the fit reads of them
# the within-query fit's columns (thurstone_map); calibration adds ``offset`` and ``score``
FIT_COLUMNS = ("elo", "elo_se", "converged", "iterations", "log_likelihood", "connected")
LABEL_COLUMNS = ("query_id", "query", "doc_ids", "docs")  # + a score column (``score`` or ``elo``) per document
POINTWISE_COLUMNS = ("query_id", "query", "doc_id", "doc", "score")

SCHEMA_FIX = "see the schema in docs/design.md, e.g. rename your columns with `ds.rename_column(old, new)`."


# ----------------------------------------------------------------------------------------------- features
def candidate_features(grades: bool = False):
    """``datasets.Features`` of a candidate set (``grades`` only when qrels are known)."""
    from datasets import Features, Sequence, Value

    features = {"query_id": Value("string"), "query": Value("string"), "doc_ids": Sequence(Value("string")),
                "docs": Sequence(Value("string")), "first_stage_scores": Sequence(Value("float64"))}
    if grades:
        features["grades"] = Sequence(Value("int64"))
    return Features(features)


def vote_features() -> dict:
    """One judge's vote on a pair (a struct of the ``votes`` list column)."""
    from datasets import Value

    return {"judge": Value("string"), "raw_answer": Value("string"), "score": Value("float64"),
            "prob_a": Value("float64"), "swapped": Value("bool"), "prompt_tokens": Value("int64"),
            "completion_tokens": Value("int64"), "cost": Value("float64"), "latency": Value("float64"),
            "error": Value("string")}


def preference_features(cross: bool = False):
    """``datasets.Features`` of a judged preference set (``cross``: with the cross-query columns)."""
    from datasets import Features, Value

    columns = [*PREFERENCE_COLUMNS, "votes", *(CROSS_QUERY_COLUMNS if cross else ())]
    return Features({c: Value("float64") if c == "prob_a" else [vote_features()] if c == "votes" else Value("string")
                     for c in columns})


def cross_pair_features():
    """``datasets.Features`` of cross-query pairs to judge (``prob_a`` still empty, no votes)."""
    from datasets import Features, Value

    return Features({c: Value("string") for c in (*PAIR_COLUMNS, *CROSS_QUERY_COLUMNS)} | {"prob_a": Value("float64")})


# ----------------------------------------------------------------------------------------------- checks
def require_columns(columns: Iterable[str], required: Sequence[str], what: str, fix: str = SCHEMA_FIX) -> None:
    """The one column check: raise naming the dataset (``what``), the missing columns, those it has and the fix."""
    columns = list(columns)
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{what} lacks columns: missing column(s) {missing} (has {sorted(columns)}): {fix}")


def check_texts(dataset, columns: Sequence[str], what: str) -> None:
    """Queries and documents must be non-empty strings."""
    for column in columns:
        values = dataset[column]
        bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(
                f"{what}: `{column}` is empty or not a string in {len(bad)} row(s) (first: row {bad[0]}, "
                f"value {values[bad[0]]!r}): drop or fill these rows before training."
            )


def check_numbers(dataset, column: str, what: str, low: float | None = None, high: float | None = None) -> np.ndarray:
    """A float column without NaN/inf, optionally inside [low, high]; returns it as an array."""
    values = np.asarray(dataset[column], dtype=np.float64)
    bad = ~np.isfinite(values)
    if low is not None:
        bad |= values < low
    if high is not None:
        bad |= values > high
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        span = f" in [{low}, {high}]" if low is not None else ""
        raise ValueError(
            f"{what}: `{column}` must be finite{span} (got {float(values[first])!r} at row {first}, "
            f"{int(bad.sum())} bad row(s)): fix or drop these rows (a failed judgment is not a 0.5)."
        )
    return values


def check_probabilities(ds, column: str, what: str) -> None:
    """Probabilities written as strings ("0.7") would be converted silently; outside [0, 1] they mean nothing. Missing
    values (failed judgments) pass: the caller decides whether a pair may lack one."""
    dtype = getattr(ds.features[column], "dtype", "")
    if not str(dtype).startswith(("float", "int", "null")):
        first = next((v for v in ds[column] if v is not None), None)
        raise ValueError(f"{what}: `{column}` must hold numbers in [0, 1] (got type {dtype}, e.g. {column}={first!r}): "
                         "write them as numbers, e.g. 0.7, not '0.7'.")
    values = np.array([np.nan if v is None else v for v in ds[column]], dtype=np.float64)
    bad = (values < 0) | (values > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: `{column}` must be in [0, 1] (got {float(values[i])!r} at row {i}): a probability.")
