"""``hub publish-family``: export and push every member of a family, then point the weights manifest at them.

Members come from recipe runs (``member=RUN_DIR``) or from a searched family directory
(``DIR/family.json`` + ``DIR/weights/<member>.safetensors``). The manifest is updated after each
successful push, so an interrupted publish records exactly what is on the Hub.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from scalenet_models import get_family, load_family
from scalenet_models.weights import WeightsEntry, load_manifest, manifest_path, save_manifest

from .card import ACCURACY_KEYS
from .errors import HubError
from .export import ExportResult, export_model
from .push import check_repo_id, plan_push, push_folder
from .source import ensure_family, load_source


@dataclass(frozen=True)
class PublishedMember:
    tag: str               # '<member>.<tag>', the manifest key
    repo_id: str
    export: ExportResult
    url: str               # commit URL, or '' on a dry run
    plan: str              # the push plan as text


def parse_runs(pairs: list[str]) -> dict[str, Path]:
    """``member=RUN_DIR`` strings -> mapping (each member at most once)."""
    runs: dict[str, Path] = {}
    for pair in pairs:
        member, sep, run = pair.partition('=')
        if not sep or not member or not run:
            raise HubError(f'--run {pair!r}: expected MEMBER=RUN_DIR, e.g. scalenet_s0=runs/s0')
        if member in runs:
            raise HubError(f'--run: member {member!r} is given twice')
        runs[member] = Path(run)
    return runs


def check_tag(tag: str) -> str:
    if not tag or '.' in tag or '/' in tag or not tag.replace('_', '').replace('-', '').isalnum():
        raise HubError(f'--tag {tag!r}: expected a short name of letters, digits, "_" or "-" (e.g. cifar10, in1k); '
                       f'weights are published as <member>.<tag>')
    return tag


def _family_dir_sources(family_dir: Path, members: list[str] | None, dataset: str):
    family_json = family_dir / 'family.json'
    if not family_json.is_file():
        raise HubError(f'{family_dir}: not a searched family directory (no family.json)')
    ensure_family(family_json)
    family = load_family(family_json)
    have = [m.name for m in family.members if (family_dir / 'weights' / f'{m.name}.safetensors').is_file()]
    names = members or have
    unknown = [n for n in names if n not in {m.name for m in family.members}]
    if unknown:
        raise HubError(f'--members: {", ".join(unknown)} not in family {family.name!r}')
    missing = [n for n in names if n not in have]
    if missing or not names:
        raise HubError(f'{family_dir / "weights"}: no inherited weights for {", ".join(missing or ["any member"])}; '
                       f'write them with `python -m search export`, or pass --members with members that have weights')
    skipped = [m.name for m in family.members if m.name not in names]
    if skipped:
        print(f'{family.name}: publishing {", ".join(names)}; skipping {", ".join(skipped)} (no weights, or not '
              f'in --members)')
    for name in names:
        yield name, lambda name=name: load_source(family_dir / 'weights' / f'{name}.safetensors', model=name,
                                                  family=family_json, dataset=dataset)


def _run_sources(runs: dict[str, Path], family: Path | None, ema: bool):
    for member, run in runs.items():
        yield member, lambda member=member, run=run: load_source(run, model=member, ema=ema, family=family)


def publish_family(org: str, tag: str, out: str | Path, runs: dict[str, Path] | None = None,
                   family_dir: str | Path | None = None, family: str | Path | None = None,
                   members: list[str] | None = None,
                   dataset: str = '', ema: bool = False, manifest: str | Path | None = None, private: bool = False,
                   dry_run: bool = False, overwrite: bool = False,
                   api=None) -> list[PublishedMember]:
    """Export (verified) every member, push each as ``org/<member>.<tag>`` and record it in the manifest.

    The manifest entries point at each repository's main branch (what ``pretrained=True`` downloads).
    """
    check_tag(tag)
    if bool(runs) == bool(family_dir):
        raise HubError('give either --run MEMBER=RUN_DIR (one per member) or --family-dir DIR, not both or neither')
    manifest = Path(manifest) if manifest else manifest_path()
    entries = load_manifest(manifest)   # fail early on a broken manifest, before anything is pushed
    out = Path(out)
    sources = list(_family_dir_sources(Path(family_dir), members, dataset) if family_dir
                   else _run_sources(runs, Path(family) if family else None, ema))
    loaded = [(member, load()) for member, load in sources]   # every input checked before anything is written
    families = sorted({get_family(src.model_name).name for _, src in loaded})
    if len(families) > 1:
        raise HubError(f'the runs belong to several families ({", ".join(families)}); publish one family per command')
    exports = []
    for member, src in tqdm(loaded, desc='export', unit='member', disable=len(loaded) < 2):
        full_tag = f'{member}.{tag}'
        repo_id = check_repo_id(f'{org}/{full_tag}')
        result = export_model(src, out / full_tag, repo_id=repo_id, overwrite=overwrite)
        exports.append((full_tag, repo_id, src, result, plan_push(result.folder, repo_id, private=private)))
    published = []
    bar = tqdm(exports, desc='push', unit='repo', disable=dry_run or len(exports) < 2)
    for full_tag, repo_id, src, result, plan in bar:
        url = '' if dry_run else push_folder(plan, api=api)
        metrics = {k: v for k, v in result.metrics.items() if k in ACCURACY_KEYS}
        entries[full_tag] = WeightsEntry(tag=full_tag, hf_hub_id=repo_id, sha256=result.sha256,
                                         num_classes=result.num_classes, dataset=src.dataset, metrics=metrics)
        if not dry_run:
            save_manifest(entries, manifest)
        published.append(PublishedMember(full_tag, repo_id, result, url, plan.describe()))
    return published
