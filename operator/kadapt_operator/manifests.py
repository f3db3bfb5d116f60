"""AdaptationJobs found in files and folders, as a GitOps repository holds them.

``kadapt validate`` and ``kadapt render`` run in CI over a repository whose folders mix
AdaptationJobs with Secrets, PersistentVolumeClaims and ``kustomization.yaml`` files. Those
other documents are not errors: they are skipped and counted, so that the command checks every
job and still says what it left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kadapt_operator.api import AdaptationJob
from kadapt_operator.validation import SpecError, SpecInvalid, load_documents, validate_object
from kadapt_trainer.config import KIND

#: File names kustomize reads as its own configuration (never Kubernetes objects).
KUSTOMIZATION_FILES = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})
#: Suffixes of the manifest files a folder is searched for.
MANIFEST_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Skipped:
    """A document that is not an AdaptationJob: what it is, for the report."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}" if self.name else self.kind


@dataclass(frozen=True)
class ManifestFile:
    """One file's AdaptationJobs, the other documents it skipped, and its errors."""

    path: Path
    jobs: list[AdaptationJob] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


def manifest_paths(paths: Iterable[Path]) -> list[Path]:
    """The files to read: each file as given, each folder searched for ``*.yaml``/``*.yml``.

    Folders are walked recursively in sorted order, leaving out hidden files and folders
    (``.git``, ``.github``); a file named explicitly is always read, whatever its suffix.
    """
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            out.append(path)
            continue
        for found in sorted(path.rglob("*")):
            hidden = any(part.startswith(".") for part in found.relative_to(path).parts)
            if found.is_file() and not hidden and (found.suffix in MANIFEST_SUFFIXES or found.name == "Kustomization"):
                out.append(found)
    return out


def _other_kind(doc: Any, path: Path) -> Skipped | None:
    """The document as a Skipped entry when it is not meant to be an AdaptationJob."""
    if path.name in KUSTOMIZATION_FILES:
        return Skipped(str(doc.get("kind", "Kustomization")) if isinstance(doc, dict) else "Kustomization")
    if isinstance(doc, dict) and "kind" in doc and doc["kind"] != KIND:
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return Skipped(str(doc["kind"]), str(name or ""))
    return None


def read_manifest(path: Path) -> ManifestFile:
    """Every AdaptationJob of one file, validated; documents of other kinds skipped.

    A document without ``kind`` is read as an AdaptationJob (so that a manifest missing its
    kind is reported, not silently skipped).
    """
    try:
        docs = load_documents(path)
    except SpecInvalid as exc:
        return ManifestFile(path, errors=exc.errors)
    jobs: list[AdaptationJob] = []
    skipped: list[Skipped] = []
    errors: list[SpecError] = []
    for i, doc in enumerate(docs):
        other = _other_kind(doc, path)
        if other is not None:
            skipped.append(other)
            continue
        try:
            jobs.append(validate_object(doc))
        except SpecInvalid as exc:
            prefix = f"[doc {i}] " if len(docs) > 1 else ""
            errors.extend(SpecError(prefix + e.path, e.message) for e in exc.errors)
    return ManifestFile(path, jobs=jobs if not errors else [], skipped=skipped, errors=errors)


def read_manifests(paths: Iterable[Path]) -> list[ManifestFile]:
    """:func:`read_manifest` of every file that :func:`manifest_paths` finds."""
    return [read_manifest(p) for p in manifest_paths(paths)]


def skipped_summary(files: Iterable[ManifestFile]) -> str:
    """One line saying how many documents of other kinds were skipped, by kind; '' when none."""
    counts: dict[str, int] = {}
    for f in files:
        for s in f.skipped:
            counts[s.kind] = counts.get(s.kind, 0) + 1
    total = sum(counts.values())
    if not total:
        return ""
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    return f"skipped {total} document{'s' if total != 1 else ''} of other kinds ({kinds})"
