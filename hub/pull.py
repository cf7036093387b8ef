"""``hub pull``: download a repository into the Hugging Face cache so that later loads work offline."""
from __future__ import annotations

from pathlib import Path

from .errors import HubError, explain_hub_error
from .push import check_repo_id


def pull(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """``snapshot_download`` of a model repository (safetensors, config, card, family.json); returns the snapshot."""
    from huggingface_hub import snapshot_download

    check_repo_id(repo_id)
    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                 allow_patterns=['*.json', '*.safetensors', '*.md'])
    except Exception as e:
        raise explain_hub_error(e, 'pull', repo_id) from e
    return Path(path)


def check_against_manifest(repo_id: str, snapshot: Path) -> list[str]:
    """Compare the pulled weights with every weights-manifest entry that points at ``repo_id``."""
    import scalenet_models
    from scalenet_models.weights import sha256_file

    lines = []
    for entry in scalenet_models.weights_entries():
        if entry.hf_hub_id != repo_id:
            continue
        file = snapshot / entry.file
        if not file.is_file():
            raise HubError(f'{repo_id}: has no {entry.file}, which the weights manifest lists for {entry.tag}')
        digest = sha256_file(file)
        if digest != entry.sha256:
            raise HubError(f'{repo_id}/{entry.file}: sha256 {digest} differs from the weights manifest entry '
                           f'{entry.tag} ({entry.sha256}); the upload was replaced or is corrupt.')
        lines.append(f'{entry.tag}: sha256 matches the weights manifest')
    return lines


def usage_text(repo_id: str, snapshot: Path, cache_dir: str | Path | None, tags: list[str]) -> str:
    """How to load what was just pulled without network."""
    env = 'HF_HUB_OFFLINE=1' + (f' HF_HUB_CACHE={cache_dir}' if cache_dir else '')
    lines = [f'{repo_id} is in the cache: {snapshot}', '', f'Offline use: set {env} in the environment, then', '',
             '    import scalenet_models  # registers the models with timm']
    if (snapshot / 'family.json').is_file():
        lines.append(f'    scalenet_models.register_family("{snapshot / "family.json"}")  # a searched family')
    lines += ['    import timm', f'    model = timm.create_model("hf-hub:{repo_id}", pretrained=True)']
    for tag in tags:
        lines.append(f'    model = timm.create_model("{tag}", pretrained=True)  # through the weights manifest')
    return '\n'.join(lines)
