"""Artifacts: every stage's output folder carries a small JSON manifest.

The manifest says what made the folder: the stage, its config, the seed, the library versions and
hashes of the inputs, so a chapter can start cold from a saved stage and know what it loaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["file_hash", "library_versions", "read_manifest", "write_json", "write_manifest"]

_LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "tokenizers", "alt-profanity-check")


def library_versions() -> dict[str, str]:
    """Versions of python and the libraries whose behaviour decides the numbers."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (of every file, sorted by name, for a folder)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (temp file, fsync, rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_jsonable(data), f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_manifest(folder: str | Path, stage: str, config: Any = None, seed: int | None = None,
                   inputs: dict[str, str] | None = None, **extra: Any) -> Path:
    """Write `folder/manifest.json` describing the stage that produced the folder."""
    return write_json(Path(folder) / "manifest.json", {
        "stage": stage, "config": config, "seed": seed, "inputs": inputs or {},
        "versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra})


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a stage folder; a clear error if the folder is not a stage artifact."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a labkit artifact (no manifest.json); rebuild it with "
                                "the stage's function or `labkit run`")
    return json.loads(path.read_text())
