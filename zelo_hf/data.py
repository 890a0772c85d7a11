"""Retrieval data in BEIR layout: bundled copies (SciFact, Cranfield), local folders, or Hub dataset ids.

A BEIR folder holds ``corpus.jsonl`` (or ``corpus.jsonl.gz``) with ``{"_id", "title", "text"}``,
``queries.jsonl`` with ``{"_id", "text"}`` and ``qrels/<split>.tsv`` (``query-id corpus-id score``).
On the Hub the same data is either one repo with ``corpus``/``queries`` configs and qrels in the
``default`` config (the ``mteb/<name>`` layout) or a ``<name>`` repo plus a ``<name>-qrels`` repo
(the ``BeIR/<name>`` layout).
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .utils import get_logger, looks_local, missing_path_error

logger = get_logger(__name__)

BUNDLED_DIR = Path(__file__).parent / "bundled"
BUNDLED = ("scifact", "cranfield")


@dataclass
class RetrievalData:
    """Corpus, queries and graded relevance judgments (qrels) of one split."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    split: str = "test"

    def doc_text(self, doc_id: str) -> str:
        """Title and text joined the way BEIR rerankers read them."""
        doc = self.corpus[doc_id]
        title, text = doc.get("title", "") or "", doc.get("text", "") or ""
        return f"{title}\n{text}".strip() if title else text.strip()

    def subset(self, query_ids: list[str]) -> RetrievalData:
        """The same corpus with only these queries (and their qrels)."""
        missing = [q for q in query_ids if q not in self.queries]
        if missing:
            raise KeyError(f"`query_ids` contains ids not in {self.name!r} queries (got {missing[:5]}): check the split.")
        return RetrievalData(
            name=self.name,
            corpus=self.corpus,
            queries={q: self.queries[q] for q in query_ids},
            qrels={q: self.qrels[q] for q in query_ids if q in self.qrels},
            split=self.split,
        )


def bundled_path(name: str) -> Path:
    """Folder of a bundled BEIR dataset (``scifact`` or ``cranfield``); see ``bundled/README.md`` for licenses."""
    if name not in BUNDLED:
        raise ValueError(f"`name` must be one of {BUNDLED} (got name={name!r}): pass a bundled dataset name.")
    return BUNDLED_DIR / name


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not a JSON object ({err.msg}): write one JSON object per line.") from err
    if not rows:
        raise ValueError(f"{path} is empty (no JSON lines): write one JSON object per line, e.g. {{\"_id\": ...}}.")
    return rows


def _require_id(row: dict, path: Path, index: int) -> str:
    if not isinstance(row, dict) or "_id" not in row:
        keys = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise ValueError(f"{path}: record {index + 1} has no `_id` (got keys {keys}): every BEIR line needs an `_id`.")
    return str(row["_id"])


def _read_corpus(path: Path) -> dict[str, dict[str, str]]:
    """``{doc_id: {title, text}}``; a repeated ``_id`` is an error (the later text would silently take its labels)."""
    corpus: dict[str, dict[str, str]] = {}
    for i, doc in enumerate(_read_jsonl(path)):
        doc_id = _require_id(doc, path, i)
        if doc_id in corpus:
            raise ValueError(
                f"{path}: document `_id`={doc_id!r} appears twice (record {i + 1} repeats an earlier one): qrels "
                "would point at the wrong text; give every document a unique `_id`."
            )
        corpus[doc_id] = {"title": doc.get("title", "") or "", "text": doc.get("text", "") or ""}
    return corpus


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for i, row in enumerate(_read_jsonl(path)):
        query_id = _require_id(row, path, i)
        if query_id in queries:
            raise ValueError(f"{path}: query `_id`={query_id!r} appears twice (record {i + 1}): give each a unique `_id`.")
        if "text" not in row:
            raise ValueError(f"{path}: query `_id`={query_id!r} has no `text` (got keys {sorted(row)}): add its text.")
        queries[query_id] = row["text"]
    return queries


def check_qrels(qrels: dict[str, dict[str, int]], corpus: dict, where: str, drop: bool = False) -> None:
    """Every judged document must be in the corpus: a dangling id would be a relevant document no ranker can find.

    A local folder (which the user can fix) raises; a published Hub dataset (``drop=True``, which they cannot)
    has those qrels lines dropped with a warning naming the count and the first one.
    """
    missing = [(q, d) for q, docs in qrels.items() for d in docs if d not in corpus]
    if not missing:
        return
    q, d = missing[0]
    message = (f"{where}: {len(missing)} qrels line(s) name a document not in the corpus (first: query-id={q!r}, "
               f"corpus-id={d!r})")
    if not drop:
        raise ValueError(f"{message}: fix the id or add the document to the corpus.")
    logger.warning("%s: dropping those lines (a published dataset cannot be fixed here).", message)
    for q, d in missing:
        del qrels[q][d]
        if not qrels[q]:
            del qrels[q]


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (header ``query-id corpus-id score``) into ``{query_id: {doc_id: grade}}``."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ValueError(f"{path}: expected the header 'query-id\\tcorpus-id\\tscore' (got {header!r}).")
        for line_no, row in enumerate(reader, start=2):
            if len(row) < 3:
                raise ValueError(f"{path}:{line_no}: expected 3 tab-separated fields (got {row!r}).")
            try:
                grade = int(row[2])
            except ValueError as err:
                raise ValueError(f"{path}:{line_no}: `score` must be an integer grade (got {row[2]!r}).") from err
            qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def load_beir_folder(folder: str | Path, split: str = "test") -> RetrievalData:
    """Load a local BEIR-layout folder; ``split`` picks ``qrels/<split>.tsv`` (queries are not filtered)."""
    folder = Path(folder)
    corpus_path = next((folder / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (folder / n).exists()), None)
    if corpus_path is None:
        raise FileNotFoundError(f"{folder}: no corpus.jsonl or corpus.jsonl.gz; a BEIR folder needs one.")
    corpus = _read_corpus(corpus_path)
    if not (folder / "queries.jsonl").exists():
        raise FileNotFoundError(f"{folder}: no queries.jsonl; a BEIR folder needs one ({{\"_id\", \"text\"}} lines).")
    queries = _read_queries(folder / "queries.jsonl")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels = read_qrels(qrels_path) if qrels_path.exists() else {}
    if not qrels_path.exists() and (folder / "qrels").exists():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"{qrels_path} not found: `split` must be one of {available} (got split={split!r}).")
    check_qrels(qrels, corpus, str(qrels_path))
    return RetrievalData(name=folder.name, corpus=corpus, queries=queries, qrels=qrels, split=split)


def load_beir_hub(repo_id: str, split: str = "test", revision: str | None = None) -> RetrievalData:
    """Load a BEIR dataset from the Hub (``mteb/<name>`` or ``BeIR/<name>`` + ``BeIR/<name>-qrels`` layouts)."""
    from datasets import load_dataset

    corpus_ds = load_dataset(repo_id, "corpus", revision=revision)
    queries_ds = load_dataset(repo_id, "queries", revision=revision)
    corpus_ds = corpus_ds[next(iter(corpus_ds))]
    queries_ds = queries_ds[next(iter(queries_ds))]
    try:
        qrels_ds = load_dataset(repo_id, "default", split=split, revision=revision)
    except (ValueError, FileNotFoundError):
        qrels_ds = load_dataset(f"{repo_id}-qrels", split=split)
    corpus: dict[str, dict[str, str]] = {}
    repeated: list[str] = []
    for r in corpus_ds:
        doc_id = str(r["_id"])
        if doc_id in corpus:  # a published corpus cannot be fixed here: keep the first text, say so
            repeated.append(doc_id)
            continue
        corpus[doc_id] = {"title": r.get("title") or "", "text": r.get("text") or ""}
    if repeated:
        logger.warning("%s corpus: %d repeated document `_id`(s) (first: %r): keeping each id's first text.",
                       repo_id, len(repeated), repeated[0])  # fmt: skip
    queries = {str(r["_id"]): r["text"] for r in queries_ds}
    qrels: dict[str, dict[str, int]] = {}
    for r in qrels_ds:
        qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
    check_qrels(qrels, corpus, f"{repo_id} qrels ({split})", drop=True)
    return RetrievalData(name=repo_id.split("/")[-1], corpus=corpus, queries=queries, qrels=qrels, split=split)


def load_retrieval_data(source: str | Path, split: str = "test") -> RetrievalData:
    """Load retrieval data from a bundled name (``scifact``, ``cranfield``), a local BEIR folder or a Hub id."""
    if str(source) in BUNDLED:
        return load_beir_folder(bundled_path(str(source)), split=split)
    path = Path(source).expanduser()
    if path.exists():
        return load_beir_folder(path, split=split)
    if looks_local(str(source)):
        raise missing_path_error(str(source), "source")
    if "/" in str(source):
        return load_beir_hub(str(source), split=split)
    raise FileNotFoundError(
        f"`source` is neither a bundled dataset {BUNDLED}, an existing folder, nor a Hub repo id (got {source!r})."
    )


SPLITS_DIR = BUNDLED_DIR / "splits"


def load_query_split(name: str) -> dict:
    """A committed fixed query split (``bundled/splits/<name>.json``): ``train`` / ``test`` query ids in a seeded
    shuffled order (a prefix is a seeded random subset) and ``source_split`` (the qrels split each comes from)."""
    path = SPLITS_DIR / f"{name}.json"
    if not path.exists():
        available = sorted(p.stem for p in SPLITS_DIR.glob("*.json"))
        raise ValueError(f"`query_split` must name a committed split, one of {available} (got {name!r}).")
    spec = json.loads(path.read_text())
    if set(spec["train"]) & set(spec["test"]):
        raise ValueError(f"the committed split {path.name} has queries in both train and test: the file is broken.")
    return spec

# ----------------------------------------------------------------------------------------------------------------------
# query selection: which queries are judged, held out for dev, or evaluated (seeded, disjoint, stable)
# ----------------------------------------------------------------------------------------------------------------------

def select_queries(
    data, n: int | None, seed: int, exclude: set[str] | frozenset[str] = frozenset(), require_qrels: bool = True
) -> list[str]:
    """``n`` query ids of ``data`` (all when None), drawn with ``seed``, skipping ``exclude``; sorted for stability.

    With ``require_qrels`` only queries that have a relevance judgment in the split are eligible (the simulated
    judge and the evaluation both need them); the draw is a seeded permutation, so the same settings always pick the
    same queries and disjoint draws (``exclude``) never overlap.
    """
    pool = sorted((q for q in data.queries if (not require_qrels or q in data.qrels) and q not in exclude), key=query_sort_key)
    if n is not None and n > len(pool):
        raise ValueError(
            f"asked for {n} queries of {data.name!r} ({data.split}) but only {len(pool)} are eligible "
            f"(after excluding {len(exclude)} already used): lower the number of queries."
        )
    if n is None:
        return pool
    order = np.random.default_rng(seed).permutation(len(pool))[:n]
    return sorted((pool[i] for i in order), key=query_sort_key)


def query_sort_key(query_id: str) -> tuple[int, str]:
    """Numeric ids in numeric order, then the others in string order (a stable order for every draw)."""
    return (int(query_id), "") if query_id.isdigit() else (1 << 62, query_id)


@dataclass
class QueryPlan:
    """Which queries play which part; drawn once from the settings, so every process and every rerun agree."""

    train: list[str]
    pairwise: list[str]
    eval: list[str]


def plan_queries(args, train_data, eval_data) -> QueryPlan:
    """Disjoint judged / pairwise-judged / evaluation queries (evaluation disjoint too when it is the same split).

    ``args`` holds the query settings of ``zelo_hf.pipelines.zerank_args.ZerankArguments`` (``dataset_name``,
    ``dataset_split``, ``eval_dataset_name``, ``eval_split``, ``query_split``, ``num_*_queries``, ``query_seed``).
    """
    if args.query_split:
        return _fixed_plan(args, train_data, eval_data)
    train = select_queries(train_data, args.num_train_queries, args.query_seed)
    pairwise = select_queries(train_data, args.num_pairwise_queries, args.query_seed + 1, exclude=set(train))
    same = (args.eval_dataset_name or args.dataset_name) == args.dataset_name and args.eval_split == args.dataset_split
    used = set(train) | set(pairwise) if same else set()
    evaluation = select_queries(eval_data, args.num_eval_queries, args.query_seed + 2, exclude=used)
    return QueryPlan(train=train, pairwise=pairwise, eval=evaluation)


def _fixed_plan(args, train_data, eval_data) -> QueryPlan:
    """The committed split's train ids (judged, then pairwise-judged) and test ids (evaluation), as prefixes."""
    spec = load_query_split(args.query_split)
    wanted = {"dataset_split": spec["source_split"]["train"], "eval_split": spec["source_split"]["test"]}
    wrong = {k: v for k, v in wanted.items() if getattr(args, k) != v}
    if wrong:
        raise ValueError(
            f"query_split={args.query_split!r} takes its queries from qrels splits {wanted} (got "
            f"{ {k: getattr(args, k) for k in wrong} }): pass " + " ".join(f"--{k} {v}" for k, v in wrong.items()) + "."
        )
    n_train = args.num_train_queries if args.num_train_queries is not None else len(spec["train"])
    n_pair, n_eval = args.num_pairwise_queries, args.num_eval_queries or len(spec["test"])
    train_ids = [q for q in spec["train"] if q in train_data.qrels]
    if n_train + n_pair > len(train_ids) or n_eval > len(spec["test"]):
        raise ValueError(
            f"query_split={args.query_split!r} has {len(train_ids)} train / {len(spec['test'])} test queries (asked "
            f"for {n_train} + {n_pair} pairwise / {n_eval}): lower num_train_queries / num_eval_queries."
        )
    return QueryPlan(train=sorted(train_ids[:n_train], key=query_sort_key),
                     pairwise=sorted(train_ids[n_train:n_train + n_pair], key=query_sort_key),
                     eval=sorted(spec["test"][:n_eval], key=query_sort_key))


def dev_queries(query_ids, fraction: float, seed: int) -> set[str]:
    """The dev share of the judged queries (a seeded draw; empty when ``fraction`` is 0)."""
    ids = sorted({str(q) for q in query_ids}, key=query_sort_key)
    n_dev = int(round(fraction * len(ids)))
    if fraction > 0 and not 1 <= n_dev < len(ids):
        raise ValueError(
            f"dev_query_fraction={fraction} of {len(ids)} judged queries leaves no dev or no training query: judge "
            "more queries or change the fraction."
        )
    order = np.random.default_rng(seed + 3).permutation(len(ids))[:n_dev]
    return {ids[i] for i in order}


def split_dev(dataset, fraction: float, seed: int):
    """``(train, dev)`` rows of ``dataset`` by :func:`dev_queries` of its ``query_id`` (dev is None for fraction 0):
    the dev queries pick epochs and checkpoints and are never trained on."""
    dev = dev_queries(dataset["query_id"], fraction, seed)
    ids = [str(q) for q in dataset["query_id"]]
    train = dataset.select([i for i, q in enumerate(ids) if q not in dev])
    return train, (dataset.select([i for i, q in enumerate(ids) if q in dev]) if dev else None)


def split_by_query(preferences, eval_fraction: float, seed: int):
    """``(train, eval)`` preference sets with disjoint queries (``eval`` is None when ``eval_fraction`` is 0)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"`eval_query_fraction` must be in [0, 1) (got {eval_fraction}): e.g. 0.2.")
    queries = sorted(set(preferences["query_id"]), key=query_sort_key)
    n_eval = int(round(eval_fraction * len(queries)))
    if eval_fraction > 0 and not 1 <= n_eval < len(queries):
        raise ValueError(
            f"eval_query_fraction={eval_fraction} of {len(queries)} queries leaves no train or no eval query: "
            "judge more queries or change the fraction."
        )
    held = set(np.asarray(queries, dtype=object)[np.random.default_rng(seed).permutation(len(queries))[:n_eval]])
    ids = preferences["query_id"]
    train = preferences.select([i for i, q in enumerate(ids) if q not in held])
    evaluation = preferences.select([i for i, q in enumerate(ids) if q in held]) if held else None
    return train, evaluation

