"""``hub push``: an export folder -> one commit on a Hub model repository, through huggingface_hub only.

The token is whatever huggingface_hub finds (``HF_TOKEN`` or ``hf auth login``); it is never read,
printed or written here. ``--dry-run`` shows the exact commit without any network call.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import HubError, explain_hub_error

REQUIRED_FILES = ('config.json', 'model.safetensors', 'README.md')
PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.pkl', '.pickle', '.ckpt')


@dataclass(frozen=True)
class PushPlan:
    """Everything one push does: repository, branch, visibility, commit message and files."""
    folder: Path
    repo_id: str
    revision: str | None
    private: bool
    commit_message: str
    files: tuple[tuple[str, Path, int], ...]   # (path in repo, local file, size in bytes)
    warnings: tuple[str, ...] = ()

    def operations(self) -> list:
        from huggingface_hub import CommitOperationAdd

        return [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f, _ in self.files]

    def describe(self) -> str:
        lines = [f'repository: {self.repo_id} ({"private" if self.private else "public"}; created if missing)',
                 f'revision:   {self.revision or "main"}', f'commit:     {self.commit_message}',
                 f'operations: {len(self.files)} x add']
        lines += [f'  add {p}  ({size:,} bytes)' for p, _, size in self.files]
        lines += [f'warning: {w}' for w in self.warnings]
        return '\n'.join(lines)


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if repo_id.count('/') != 1:
        raise HubError(f'--repo-id {repo_id!r}: expected "org/name" (your user name or an organisation, then the '
                       f'repository name)')
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f'--repo-id {repo_id!r}: {e}') from None
    return repo_id


def plan_push(folder: str | Path, repo_id: str, revision: str | None = None, private: bool = False,
              commit_message: str | None = None) -> PushPlan:
    """Check that ``folder`` is an export folder and list the commit that would publish it."""
    folder = Path(folder)
    check_repo_id(repo_id)
    if not folder.is_dir():
        raise HubError(f'{folder}: no such folder (create it with `python -m hub export`)')
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise HubError(f'{folder}: not an export folder (missing {", ".join(missing)}); create it with '
                       f'`python -m hub export`')
    files = []
    for path in sorted(folder.rglob('*')):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith('.') for part in Path(rel).parts) or not path.is_file():
            continue   # temp files, caches, .git
        if path.suffix in PICKLE_SUFFIXES:
            raise HubError(f'{path}: pickled weights are not published (safetensors only); remove the file')
        files.append((rel, path, path.stat().st_size))
    try:
        config = json.loads((folder / 'config.json').read_text())
        arch = config['architecture']
        num_classes = config['num_classes']
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise HubError(f'{folder / "config.json"}: not a timm config.json ({e}); re-export the folder') from None
    message = commit_message or f'Add {arch} weights ({num_classes} classes), exported by scalenet-models'
    warnings = []
    if f'hf-hub:{repo_id}"' not in (folder / 'README.md').read_text():
        warnings.append(f'the model card\'s usage snippet names another repository; re-export with '
                        f'--repo-id {repo_id} so that it shows the right one')
    return PushPlan(folder=folder, repo_id=repo_id, revision=revision, private=private, commit_message=message,
                    files=tuple(files), warnings=tuple(warnings))


def _hf_api():
    from huggingface_hub import HfApi

    return HfApi()


def push_folder(plan: PushPlan, api=None) -> str:
    """Create the repository (if needed) and the branch, then upload every file in one commit; returns its URL."""
    from huggingface_hub import constants, get_token

    if constants.is_offline_mode():
        raise HubError(f'cannot push to {plan.repo_id}: HF_HUB_OFFLINE=1 is set; unset it to publish '
                       f'(or use --dry-run to only see the commit).')
    if api is None:
        if get_token() is None:
            raise HubError(f'cannot push to {plan.repo_id}: no Hugging Face token found; log in with '
                           f'`hf auth login` or set the HF_TOKEN environment variable (a write token).')
        api = _hf_api()
    try:
        api.create_repo(plan.repo_id, private=plan.private, exist_ok=True)
        if plan.revision and plan.revision != 'main':
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)
        info = api.create_commit(plan.repo_id, plan.operations(), commit_message=plan.commit_message,
                                 revision=plan.revision)
    except HubError:
        raise
    except Exception as e:
        raise explain_hub_error(e, 'push to', plan.repo_id) from e
    return str(getattr(info, 'commit_url', '') or f'https://huggingface.co/{plan.repo_id}')
