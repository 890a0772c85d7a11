"""Saving a reranker so that sentence-transformers' ``CrossEncoder(path)`` scores exactly like this toolkit
(see :mod:`zelo_hf.modeling`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .loading import IDENTITY_ACTIVATION, model_head


def write_sentence_transformers_files(model, output_dir: str | Path, max_length: int | None = None) -> None:
    """Write what ``CrossEncoder(output_dir)`` needs to score like this toolkit (see the module docstring)."""
    output_dir = Path(output_dir)
    head = model_head(model)
    version = _st_version()
    st_config = {
        "__version__": version,
        "activation_fn": IDENTITY_ACTIVATION,
        "default_prompt_name": None,
        "model_type": "CrossEncoder",
        "prompts": {},
    }
    (output_dir / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
    if head != "causal":
        return  # plain sequence-classification folder; config.json already holds the Identity activation
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_LogitScore",
            "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore",
        },
    ]
    transformer = {
        "transformer_task": "text-generation",
        "modality_config": {
            "text": {"method": "forward", "method_output_name": "logits"},
            "message": {"method": "forward", "method_output_name": "logits", "format": "flat"},
        },
        "module_output_name": "causal_logits",
        "processing_kwargs": {"chat_template": {"add_generation_prompt": True}},
    }
    if max_length:
        transformer["max_seq_length"] = max_length
    logit = {
        "true_token_id": model.config.zelo_true_token_id,
        "false_token_id": None,
        "module_input_name": "causal_logits",
    }
    (output_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    (output_dir / "sentence_bert_config.json").write_text(json.dumps(transformer, indent=2))
    (output_dir / "1_LogitScore").mkdir(exist_ok=True)
    (output_dir / "1_LogitScore" / "config.json").write_text(json.dumps(logit, indent=2))


def _st_version() -> dict[str, str]:
    import transformers

    try:
        import sentence_transformers

        st = sentence_transformers.__version__
    except ImportError:  # pragma: no cover - a hard dependency, but saving must not need it
        st = "unknown"
    return {"sentence_transformers": st, "transformers": transformers.__version__, "pytorch": torch.__version__}
