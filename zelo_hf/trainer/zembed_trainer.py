"""zembed, query side (ZELO.md step 8): a bi-encoder whose query tower learns a zELO label set's rankings.

The document tower is the base model, frozen: every labelled document is embedded once, before training, and a
training step only encodes queries (tens of tokens) against those fixed embeddings. That is ~50x cheaper per step
than re-encoding documents (what ``SentenceTransformerTrainer`` does), it keeps an existing vector index of the
corpus valid, and it cannot erode what the base model knows about documents. The saved model is a
sentence-transformers ``Router`` (``encode_query`` -> the trained tower, ``encode_document`` / ``encode`` -> the base).

Selection never looks at held-out queries: ``eval_dataset`` holds dev queries of the label set, scored against their
own zELO scores (``label_ndcg@10``, gains = score - the query's minimum) before training and after every epoch; the
best state, the untrained base included, is the one kept.

Input rows are label-set rows (one per query): ``query``, ``docs`` (list), and ``score`` (list, calibrated zELO
scores; ``listwise_kl``) or ``labels`` (list of 0/1; ``contrastive``); or, for the pairwise judge on a bi-encoder
(``pairwise_bce``, ZELO.md step 4), grouped preferences: ``query``, ``docs``, ``pair_a``, ``pair_b``, ``prob_a``
(lists), whose logit of A over B is ``(cos(q, A) - cos(q, B)) / temperature`` and whose dev metric is the agreement
with the judges.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from ..modeling.scoring import PAIRWISE_BI_ENCODER_FILE
from ..schema import require_columns
from ..utils import get_logger
from .losses import ZEMBED_LOSSES, pair_logits
from .metrics import ndcg_at_k, pairwise_metrics
from .zembed_config import SELECTION_METRICS, ZembedConfig

logger = get_logger(__name__)


class DocumentIndex:
    """Unique document texts and their embeddings by the frozen document tower (one pass, shared by seeds)."""

    def __init__(self, texts: list[str], embeddings: torch.Tensor):
        self.texts, self.embeddings = texts, embeddings
        self.row = {t: i for i, t in enumerate(texts)}

    @classmethod
    def build(cls, model, texts, batch_size: int = 64) -> DocumentIndex:
        unique = list(dict.fromkeys(texts))
        with torch.no_grad():
            emb = model.encode_document(
                unique, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
            )
        return cls(unique, emb.float().cpu())

    def extend(self, model, texts, batch_size: int = 64) -> DocumentIndex:
        """This index plus the texts it lacks (embedded now)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.row]
        if not missing:
            return self
        more = DocumentIndex.build(model, missing, batch_size)
        return DocumentIndex(self.texts + more.texts, torch.cat([self.embeddings, more.embeddings]))

    def save(self, path) -> None:
        """Write the texts and embeddings (``torch.save``) so a later stage reuses them instead of embedding again."""
        torch.save({"texts": self.texts, "embeddings": self.embeddings}, str(path))

    @classmethod
    def load(cls, path) -> DocumentIndex:
        saved = torch.load(str(path))
        return cls(saved["texts"], saved["embeddings"])

    def rows(self, texts) -> list[int]:
        return [self.row[t] for t in texts]

    def run(self, model, candidates) -> dict[str, dict[str, float]]:
        """Cosine run of a bi-encoder (``encode_query``) against these embeddings of each query's candidates."""
        with torch.no_grad():
            queries = model.encode_query(list(candidates["query"]), convert_to_tensor=True, normalize_embeddings=True,
                                         show_progress_bar=False).float().cpu()
        return {str(row["query_id"]): dict(zip(map(str, row["doc_ids"]), (self.embeddings[self.rows(row["docs"])] @ q)
                                               .tolist())) for row, q in zip(candidates, queries)}


class ZembedCollator:
    """Tokenized queries + a padded ``(queries, docs)`` matrix of document rows and a mask, with the targets: one per
    document (``targets``), or for pair targets (``pairwise``) the padded ``pair_a``, ``pair_b``, ``targets``
    (``prob_a``) and ``pair_mask``."""

    def __init__(self, tokenizer, max_query_length: int, target: str, pairwise: bool = False):
        self.tokenizer, self.max_query_length, self.target, self.pairwise = tokenizer, max_query_length, target, pairwise

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        doc_rows, mask = _pad([r["doc_rows"] for r in rows], torch.long)
        if self.pairwise:
            pair_a, pair_mask = _pad([r["pair_a"] for r in rows], torch.long)
            targets = {"pair_a": pair_a, "pair_b": _pad([r["pair_b"] for r in rows], torch.long)[0],
                       "targets": _pad([r[self.target] for r in rows], torch.float32)[0], "pair_mask": pair_mask}
        else:
            targets = {"targets": _pad([r[self.target] for r in rows], torch.float32)[0]}
        enc = self.tokenizer(
            [r["query"] for r in rows], padding=True, truncation=True, max_length=self.max_query_length,
            return_tensors="pt",
        )
        return {**enc, "doc_rows": doc_rows, "mask": mask, **targets}


def _pad(lists: list, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged lists -> a zero-padded ``(rows, longest)`` tensor and the mask of its real entries."""
    width = max(len(values) for values in lists)
    out = torch.zeros(len(lists), width, dtype=dtype)
    mask = torch.zeros(len(lists), width, dtype=torch.bool)
    for i, values in enumerate(lists):
        out[i, : len(values)] = torch.as_tensor(values, dtype=dtype)
        mask[i, : len(values)] = True
    return out, mask


class KeepBestCallback(TrainerCallback):
    """Keeps a CPU copy of the weights whenever the dev metric improves (the pre-training evaluation counts)."""

    def __init__(self, metric: str, greater_is_better: bool = True):
        self.metric, self.sign = metric, 1.0 if greater_is_better else -1.0
        self.best, self.best_epoch, self.state_dict, self.history = -np.inf, None, None, []

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        value = (metrics or {}).get(f"eval_{self.metric}")
        if value is None or model is None:
            return
        epoch = float(state.epoch or 0.0)
        self.history.append({"epoch": epoch, self.metric: float(value)})
        if self.sign * value > self.best:
            self.best, self.best_epoch = self.sign * float(value), epoch
            self.state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    @property
    def best_value(self) -> float:
        return self.sign * self.best


class ZembedTrainer(Trainer):
    """Train the query tower of a bi-encoder on a zELO label set against frozen document embeddings.

    Args:
        model: a sentence-transformers bi-encoder name/path or a loaded ``SentenceTransformer`` (the base).
        args: a :class:`ZembedConfig`.
        train_dataset, eval_dataset: label sets (``query``, ``docs``, ``score`` or ``labels``); ``eval_dataset``
            holds dev queries for selection (never the held-out evaluation queries).
        document_index: a :class:`DocumentIndex` built by the same base model (shared across seeds); built from the
            datasets' documents when None.
    """

    def __init__(self, model, args: ZembedConfig | None = None, train_dataset=None, eval_dataset=None,
                 document_index: DocumentIndex | None = None, callbacks=None):
        args = args or ZembedConfig(output_dir="zembed-model")
        query_model, self.document_model = self._load_towers(model)
        objective = ZEMBED_LOSSES[args.loss_type]
        self.target, self.pairwise = objective.column, objective.unit == "pair"
        texts = [d for ds in (train_dataset, eval_dataset) if ds is not None for d in _flat(ds["docs"])]
        base_index = document_index or DocumentIndex.build(self.document_model, [], args.document_batch_size)
        self.document_index = base_index.extend(self.document_model, texts, args.document_batch_size)
        train_dataset = self._prepare(train_dataset, "train") if train_dataset is not None else None
        eval_dataset = self._prepare(eval_dataset, "eval") if eval_dataset is not None else None
        if eval_dataset is None:
            args.eval_strategy = "no"
        self.keep_best = KeepBestCallback(args.selection_metric,
                                          SELECTION_METRICS[objective.unit][args.selection_metric])
        super().__init__(
            model=query_model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            data_collator=ZembedCollator(query_model.tokenizer, args.max_query_length, self.target, self.pairwise),
            callbacks=[self.keep_best, *(callbacks or [])],
        )

    @staticmethod
    def _load_towers(model):
        """``(query tower to train, frozen document tower)``, both copies of the base bi-encoder."""
        from sentence_transformers import SentenceTransformer

        if not isinstance(model, SentenceTransformer):
            model = SentenceTransformer(str(model), device="cpu")
        document = copy.deepcopy(model).eval()
        document.requires_grad_(False)
        return model, document

    def _prepare(self, dataset, split: str):
        """Validate the label set (or grouped preferences) and add each query's document rows."""
        columns = ["query", "pair_a", "pair_b", self.target] if self.pairwise else ["query", self.target]
        require_columns(dataset.column_names, [*columns, "docs"], f"{split} dataset",
                        "pass grouped preferences (zelo_hf.grouping.group_preferences)." if self.pairwise else
                        "pass a zELO label set (zelo fit / zelo calibrate output).")
        check = _check_pairs if self.pairwise else _check_targets
        names = [*columns[1:], "docs"]  # whole columns read once, not row by row
        for i, values in enumerate(zip(*(dataset[name] for name in names))):
            check(dict(zip(names, values)), self.target, f"{split} dataset row {i}")
        rows = [self.document_index.rows(docs) for docs in dataset["docs"]]
        return dataset.select_columns(columns).add_column("doc_rows", rows)

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        """Cosines of the queries against their documents' frozen embeddings -> the configured listwise loss."""
        scores = self._scores(model, inputs) / self.args.temperature
        loss = ZEMBED_LOSSES[self.args.loss_type].loss(scores, inputs, self.args)
        return (loss, {"scores": scores}) if return_outputs else loss

    def _scores(self, model, inputs: dict[str, Any]) -> torch.Tensor:
        features = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inputs}
        query = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)
        docs = self.document_index.embeddings.to(query.device)[inputs["doc_rows"]]
        return torch.einsum("qd,qmd->qm", query.float(), docs)

    def measure(self, dataset) -> dict[str, float]:
        """The dev metric(s) of ``dataset`` (prepared by :meth:`prepare`), without logging or callbacks: the
        student's ``label_ndcg@10`` against each query's zELO scores (gains = score - the query's minimum), or its
        pairwise metrics against the judges (:func:`zelo_hf.trainer.metrics.pairwise_metrics`)."""
        model = self.model.eval()
        ndcg, logits, probs = [], [], []
        with torch.no_grad():
            for start in range(0, len(dataset), 64):
                batch = self.data_collator([dataset[i] for i in range(start, min(start + 64, len(dataset)))])
                batch = {k: v.to(self.args.device) for k, v in batch.items()}
                scores = self._scores(model, batch) / self.args.temperature
                if self.pairwise:
                    pair_mask = batch["pair_mask"]
                    logits.append(pair_logits(scores, batch["pair_a"], batch["pair_b"])[pair_mask].cpu().numpy())
                    probs.append(batch["targets"][pair_mask].cpu().numpy())
                    continue
                for s, t, m in zip(scores.cpu().numpy(), batch["targets"].cpu().numpy(), batch["mask"].cpu().numpy()):
                    ndcg.append(ndcg_at_k(s[m], t[m] - t[m].min()))
        if self.pairwise:
            return pairwise_metrics(np.concatenate(logits), np.concatenate(probs))
        return {"label_ndcg@10": float(np.nanmean(ndcg))}

    def prepare(self, dataset, split: str = "eval"):
        """``dataset`` checked and given its document rows (documents the index lacks are embedded now), as the
        training and dev sets are: what :meth:`measure` reads, e.g. held-out queries' grouped preferences."""
        self.document_index = self.document_index.extend(self.document_model, _flat(dataset["docs"]),
                                                         self.args.document_batch_size)
        return self._prepare(dataset, split)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """:meth:`measure` of the dev queries, logged and passed to the callbacks (``keep_best``)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.measure(dataset).items()}
        metrics["epoch"] = float(self.state.epoch or 0)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def train(self, *args, **kwargs):
        """Evaluate the base first (epoch 0), train, then restore the best dev state (``keep_best``)."""
        if self.eval_dataset is not None:
            self.evaluate()
        result = super().train(*args, **kwargs)
        if self.eval_dataset is not None and self.args.keep_best and self.keep_best.state_dict is not None:
            self.model.load_state_dict(self.keep_best.state_dict)
            logger.info("zembed: kept the epoch-%s state (dev %s %.4f)", self.keep_best.best_epoch,
                        self.args.selection_metric, self.keep_best.best_value)
        return result

    def selection(self) -> dict[str, Any]:
        """What the dev selection saw and kept (for the stage summary and the card)."""
        kb = self.keep_best
        return {"kept_epoch": kb.best_epoch, f"dev_{self.args.selection_metric}": kb.best_value,
                "dev_history": kb.history}

    def export_model(self):
        """The trained model as one sentence-transformers model: a Router (query: trained, cutting queries at
        ``max_query_length`` tokens as training did; document: the base)."""
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Router

        query_modules = list(self.model)
        if hasattr(query_modules[0], "max_seq_length"):  # encode_query cuts queries where training did
            query_modules[0].max_seq_length = self.args.max_query_length
        router = Router.for_query_document(query_modules=query_modules, document_modules=list(self.document_model))
        return SentenceTransformer(modules=[router], device="cpu")

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the Router model (loads with ``SentenceTransformer(path)``; use ``encode_query`` for queries); a
        pairwise judge's folder also gets ``zelo_pairwise.json`` (``zelo_hf.load_pairwise_scorer`` reads it)."""
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            self.export_model().save(str(output_dir))
            if self.pairwise:  # what load_pairwise_scorer reads: this folder is a pairwise judge, at this temperature
                spec = {"architecture": "bi_encoder", "temperature": self.args.temperature}
                (Path(output_dir) / PAIRWISE_BI_ENCODER_FILE).write_text(json.dumps(spec, indent=1) + "\n")


def _check_targets(row: dict[str, Any], target: str, where: str) -> None:
    docs, values = row["docs"], np.asarray(row[target], dtype=np.float64)
    if len(docs) < 2 or len(values) != len(docs) or not np.isfinite(values).all():
        raise ValueError(
            f"{where}: `{target}` must be finite, one per document, with >= 2 documents (got {len(values)} values for "
            f"{len(docs)} documents): drop or fix this query."
        )


def _check_pairs(row: dict[str, Any], target: str, where: str) -> None:
    n, a, b = len(row["docs"]), np.asarray(row["pair_a"]), np.asarray(row["pair_b"])
    prob = np.asarray([np.nan if p is None else p for p in row[target]], dtype=np.float64)
    if not len(a) or not (len(a) == len(b) == len(prob)):
        raise ValueError(f"{where}: needs >= 1 pair with one `pair_a`, `pair_b` and `{target}` each (got "
                         f"{len(a)}, {len(b)} and {len(prob)}): drop or fix this query.")
    if (a < 0).any() or (a >= n).any() or (b < 0).any() or (b >= n).any():
        raise ValueError(f"{where}: `pair_a`/`pair_b` must index the query's {n} `docs` (got {a.tolist()}, "
                         f"{b.tolist()}): regroup the preference set.")
    if not ((prob >= 0) & (prob <= 1)).all():
        raise ValueError(f"{where}: `{target}` must be probabilities in [0, 1] (got {prob.tolist()}): drop failed "
                         "pairs (prob_a None) before grouping.")


def _flat(lists) -> list[str]:
    return [x for row in lists for x in row]
