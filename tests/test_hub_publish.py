"""hub push / publish-family / pull without network: exact commits through a fake Hub API, the weights
manifest, and offline loading from a pre-filled Hugging Face cache (in a subprocess, because
huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE at import time)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx2
import pytest
import timm
import torch
import yaml
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from safetensors.torch import load_file, save_file

import scalenet_models
from hub.__main__ import main
from hub.errors import HubError
from hub.export import export_model
from hub.family import publish_family
from hub.push import plan_push, push_folder
from hub.source import ensure_family, load_source
from scalenet_models.weights import load_manifest, sha256_file

ROOT = Path(__file__).resolve().parents[1]
TINY_FAMILY = {
    'format': 'scalenet-family/1', 'name': 'hubtest',
    'cfg': {'license': 'apache-2.0', 'description': 'A tiny family for the hub tests.'},
    'base': {'stem_channels': 8, 'head_channels': 64, 'stages': [
        {'blocks': [{'type': 'ds', 'kernel': 3, 'out_channels': 8}]},
        {'blocks': [{'kernel': 3, 'stride': 2, 'expansion': 3, 'out_channels': 16}]},
        {'blocks': [{'kernel': 5, 'stride': 2, 'expansion': 3, 'se': 0.25, 'out_channels': 24}]}]},
    'members': [{'name': 'hubtest_s0', 'resolution': 32, 'metrics': {'top1': 55.5, 'top5': 91.0}},
                {'name': 'hubtest_s1', 'depth': 1.5, 'width': 1.25, 'resolution': 40}],
}
SECRET = 'hf_ThisTokenMustNeverBeWritten0000'


def tiny_family(tmp: Path) -> Path:
    path = tmp / 'family' / 'family.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_FAMILY))
    ensure_family(path)
    return path


def make_run(run: Path, model: str, num_classes: int = 5, img_size: int = 32, family: Path | None = None,
             seed: int = 0) -> torch.nn.Module:
    """A run directory as the recipes' contract describes it (randomly initialised weights)."""
    torch.manual_seed(seed)
    net = timm.create_model(model, num_classes=num_classes).eval()
    run.mkdir(parents=True)
    save_file(net.state_dict(), str(run / 'model.safetensors'))
    command = f'accelerate launch -m recipes.train --model {model}'
    (run / 'config.yaml').write_text(yaml.safe_dump({
        'model': model, 'num_classes': num_classes, 'img_size': img_size, 'data_dir': '/data', 'dataset': 'cifar10',
        'family': str(family) if family else None, 'command': command}))
    (run / 'metrics.json').write_text(json.dumps({
        'model': model, 'num_classes': num_classes, 'dataset': 'cifar10', 'img_size': img_size,
        'final': {'top1': 60.0 + seed, 'top5': 95.0, 'loss': 1.0}, 'best': {'top1': 60.0 + seed, 'epoch': 0},
        'epochs': [{'epoch': 0, 'train_loss': 1.5, 'top1': 60.0, 'top5': 95.0, 'lr': 0.1, 'img_per_s': 10.0}],
        'command': command}))
    return net


class FakeCommit:
    def __init__(self, repo_id):
        self.commit_url = f'https://huggingface.co/{repo_id}/commit/0123abcd'


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records every call, optionally fails one."""

    def __init__(self, fail: Exception | None = None, fail_on_commit: int | None = None):
        self.calls, self.fail, self.fail_on_commit, self.commits = [], fail, fail_on_commit, 0

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.calls.append(('create_repo', repo_id, private, exist_ok))
        if self.fail is not None:
            raise self.fail

    def create_branch(self, repo_id, branch, exist_ok=False):
        self.calls.append(('create_branch', repo_id, branch, exist_ok))

    def create_commit(self, repo_id, operations, commit_message, revision=None):
        self.commits += 1
        if self.fail_on_commit == self.commits:
            raise HfHubHTTPError('500 Server Error',
                                 response=httpx2.Response(500, request=httpx2.Request('POST', 'https://x')))
        self.calls.append(('create_commit', repo_id, [(op.path_in_repo, op.path_or_fileobj) for op in operations],
                           commit_message, revision))
        return FakeCommit(repo_id)


def _http_error(status: int) -> HfHubHTTPError:
    return HfHubHTTPError(f'{status} Client Error', response=httpx2.Response(
        status, request=httpx2.Request('POST', 'https://huggingface.co/api/repos/create')))


@pytest.fixture
def export_dir(tmp_path):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family)
    return export_model(load_source(tmp_path / 'run'), tmp_path / 'export').folder


@pytest.fixture
def no_real_hub(monkeypatch):
    """Any attempt to build the real HfApi fails the test."""
    def refuse():
        raise AssertionError('the real Hub API must not be used in tests')
    monkeypatch.setattr('hub.push._hf_api', refuse)


def test_push_dry_run_lists_the_commit(export_dir, capsys, no_real_hub):
    assert main(['push', str(export_dir), '--repo-id', 'org/hubtest_s0.cifar10', '--private', '--dry-run']) == 0
    out = capsys.readouterr().out
    assert 'repository: org/hubtest_s0.cifar10 (private' in out and 'revision:   main' in out
    assert 'commit:     Add hubtest_s0 weights (5 classes), exported by scalenet-models' in out
    assert 'operations: 4 x add' in out
    for name in ('README.md', 'config.json', 'family.json', 'model.safetensors'):
        size = (export_dir / name).stat().st_size
        assert f'  add {name}  ({size:,} bytes)' in out
    assert 'dry run: nothing was sent' in out
    assert "warning: the model card's usage snippet names another repository" in out   # exported without --repo-id
    assert plan_push(export_dir, 'your-org/export').warnings == ()


def test_push_makes_one_commit_with_exactly_the_folder(export_dir, monkeypatch, capsys):
    fake = FakeHfApi()
    monkeypatch.setattr('hub.push._hf_api', lambda: fake)
    monkeypatch.setenv('HF_TOKEN', SECRET)
    assert main(['push', str(export_dir), '--repo-id', 'org/hubtest_s0.cifar10', '--revision', 'v1']) == 0
    captured = capsys.readouterr()
    assert fake.calls == [
        ('create_repo', 'org/hubtest_s0.cifar10', False, True),
        ('create_branch', 'org/hubtest_s0.cifar10', 'v1', True),
        ('create_commit', 'org/hubtest_s0.cifar10',
         [(n, str(export_dir / n)) for n in ('README.md', 'config.json', 'family.json', 'model.safetensors')],
         'Add hubtest_s0 weights (5 classes), exported by scalenet-models', 'v1')]
    assert 'pushed: https://huggingface.co/org/hubtest_s0.cifar10/commit/0123abcd' in captured.out
    assert SECRET not in captured.out + captured.err
    assert all(SECRET.encode() not in p.read_bytes() for p in export_dir.iterdir())


@pytest.mark.parametrize('error, match', [
    (_http_error(401), 'not authorised .*hf auth login'),
    (_http_error(403), 'forbidden .*write access'),
    (RepositoryNotFoundError('404', response=httpx2.Response(404, request=httpx2.Request('GET', 'https://x'))),
     'does not exist or your token cannot see it'),
    (httpx2.ConnectError('[Errno -2] Name or service not known'), 'the Hub cannot be reached'),
])
def test_push_errors_are_explained(export_dir, error, match):
    plan = plan_push(export_dir, 'org/name')
    with pytest.raises(HubError, match=match):
        push_folder(plan, api=FakeHfApi(fail=error))


def test_push_offline_and_without_token(export_dir, monkeypatch, no_real_hub):
    plan = plan_push(export_dir, 'org/name')
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', True)
    with pytest.raises(HubError, match='HF_HUB_OFFLINE=1 is set'):
        push_folder(plan)
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', False)
    monkeypatch.setattr('huggingface_hub.get_token', lambda: None)
    with pytest.raises(HubError, match='no Hugging Face token found; log in with `hf auth login` or set the HF_TOKEN'):
        push_folder(plan)


def test_push_refuses_bad_folders_and_repo_ids(export_dir, tmp_path):
    with pytest.raises(HubError, match='expected "org/name"'):
        plan_push(export_dir, 'just-a-name')
    with pytest.raises(HubError, match='--repo-id'):
        plan_push(export_dir, 'org/bad name')
    with pytest.raises(HubError, match=r'not an export folder \(missing config.json, README.md\)'):
        plan_push(tmp_path / 'run', 'org/name')
    torch.save({}, export_dir / 'pytorch_model.bin')
    with pytest.raises(HubError, match='pickled weights are not published'):
        plan_push(export_dir, 'org/name')


def fill_hf_cache(cache: Path, repo_id: str, folder: Path, revision: str = 'a' * 40) -> None:
    """The layout huggingface_hub downloads into: models--org--name/{refs/main, snapshots/<rev>/...}."""
    repo = cache / ('models--' + repo_id.replace('/', '--'))
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(revision)
    shutil.copytree(folder, repo / 'snapshots' / revision)


OFFLINE_SCRIPT = textwrap.dedent('''
    import json, sys, torch, timm
    from safetensors.torch import save_file
    import scalenet_models
    from hub.errors import HubError
    from hub.pull import check_against_manifest, pull
    from huggingface_hub import hf_hub_download
    out = sys.argv[2]
    # a searched family: registered first (as its card says), then its manifest entries apply
    scalenet_models.register_family(hf_hub_download('org/hubtest_s0.cifar10', 'family.json'))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits, report = {}, {}
    with torch.no_grad():
        for name in ('hubtest_s0', 'hubtest_s1.cifar10', 'hf-hub:org/hubtest_s0.cifar10', 'hf-hub:org/hubtest_s1.cifar10',
                     'scalenet_s0', 'hf-hub:org/scalenet_s0.cifar10'):
            model = timm.create_model(name, pretrained=True).eval()
            logits[name] = model(x).contiguous()
    import contextlib, io
    from hub.__main__ import main
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        report['cli_rc'] = main(['pull', 'org/hubtest_s1.cifar10'])
    report['cli'] = printed.getvalue()
    report['pull'] = str(pull('org/hubtest_s1.cifar10'))
    report['checks'] = check_against_manifest('org/hubtest_s1.cifar10', __import__('pathlib').Path(report['pull']))
    try:
        pull('org/not_in_cache')
    except HubError as e:
        report['pull_error'] = str(e)
    try:
        timm.create_model('hubtest_s0', pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id='org/missing'))
    except Exception as e:
        report['missing_error'] = type(e).__name__
    save_file(logits, out + '.safetensors')
    json.dump(report, open(out + '.json', 'w'))
''')


def test_publish_family_then_pretrained_true_offline(tmp_path, monkeypatch):
    family = tiny_family(tmp_path)
    nets = {m: make_run(tmp_path / 'runs' / m, m, num_classes=5 + i, img_size=32, family=family, seed=i)
            for i, m in enumerate(('hubtest_s0', 'hubtest_s1'))}
    manifest = tmp_path / 'weights.json'
    packaged = sha256_file(Path(scalenet_models.__file__).with_name('weights.json'))
    fake = FakeHfApi()
    published = publish_family('org', 'cifar10', tmp_path / 'exports', family=family, manifest=manifest, api=fake,
                               runs={m: tmp_path / 'runs' / m for m in nets})
    assert [p.tag for p in published] == ['hubtest_s0.cifar10', 'hubtest_s1.cifar10']
    assert [c[1] for c in fake.calls if c[0] == 'create_commit'] == ['org/hubtest_s0.cifar10', 'org/hubtest_s1.cifar10']
    # the zoo member goes through the CLI into the same manifest
    zoo_net = make_run(tmp_path / 'runs' / 'scalenet_s0', 'scalenet_s0', num_classes=3, seed=7)
    monkeypatch.setattr('hub.push._hf_api', lambda: fake)
    monkeypatch.setenv('HF_TOKEN', SECRET)
    assert main(['publish-family', '--org', 'org', '--tag', 'cifar10', '--out', str(tmp_path / 'exports'),
                 '--manifest', str(manifest), '--run', f'scalenet_s0={tmp_path / "runs" / "scalenet_s0"}']) == 0
    monkeypatch.delenv('HF_TOKEN')
    entries = load_manifest(manifest)
    assert sorted(entries) == ['hubtest_s0.cifar10', 'hubtest_s1.cifar10', 'scalenet_s0.cifar10']
    for tag, e in entries.items():
        folder = tmp_path / 'exports' / tag
        assert e.hf_hub_id == f'org/{tag}' and e.file == 'model.safetensors' and e.dataset == 'cifar10'
        assert e.sha256 == sha256_file(folder / 'model.safetensors')
    s1 = entries['hubtest_s1.cifar10']
    assert s1.num_classes == 6 and s1.metrics == {'top1': 61.0, 'top5': 95.0}
    assert sha256_file(Path(scalenet_models.__file__).with_name('weights.json')) == packaged   # never touched

    cache = tmp_path / 'hf-cache'
    for tag in entries:
        fill_hf_cache(cache, f'org/{tag}', tmp_path / 'exports' / tag)
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(cache), 'HF_HOME': str(tmp_path / 'hf-home'),
           'SCALENET_WEIGHTS_MANIFEST': str(manifest), 'PYTHONPATH': str(ROOT)}
    env.pop('HF_TOKEN', None)
    out = tmp_path / 'offline'
    proc = subprocess.run([sys.executable, '-c', OFFLINE_SCRIPT, str(family), str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logits, report = load_file(str(out) + '.safetensors'), json.loads(Path(str(out) + '.json').read_text())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for name, net in [*nets.items(), ('scalenet_s0', zoo_net)]:
            expected = net(x)
            local = f'{name}.cifar10' if name == 'hubtest_s1' else name   # by its tag, like timm's own names
            # another process may use another thread count: allow float rounding, nothing more
            torch.testing.assert_close(logits[local], expected, rtol=1e-5, atol=1e-5, msg=local)
            hub_name = f'hf-hub:org/{name}.cifar10'
            torch.testing.assert_close(logits[hub_name], expected, rtol=1e-5, atol=1e-5, msg=hub_name)
    assert Path(report['pull']) == cache / 'models--org--hubtest_s1.cifar10' / 'snapshots' / ('a' * 40)
    assert report['checks'] == ['hubtest_s1.cifar10: sha256 matches the weights manifest']
    assert 'not in the local HF cache' in report['pull_error']
    assert report['cli_rc'] == 0 and 'hubtest_s1.cifar10: sha256 matches the weights manifest' in report['cli']
    assert 'Offline use: set HF_HUB_OFFLINE=1' in report['cli'] and 'register_family(' in report['cli']
    assert 'timm.create_model("hubtest_s1.cifar10", pretrained=True)' in report['cli']
    assert report['missing_error'] in ('LocalEntryNotFoundError', 'PretrainedWeightsError')


def test_publish_searched_family_dir_dry_run(tmp_path, no_real_hub, capsys):
    family_dir = tiny_family(tmp_path).parent
    (family_dir / 'weights').mkdir()
    for i, m in enumerate(('hubtest_s0', 'hubtest_s1')):
        torch.manual_seed(i)
        save_file(timm.create_model(m, num_classes=4).state_dict(), str(family_dir / 'weights' / f'{m}.safetensors'))
    manifest = tmp_path / 'weights.json'
    assert main(['publish-family', '--family-dir', str(family_dir), '--org', 'org', '--tag', 'search',
                 '--dataset', 'imagenette', '--out', str(tmp_path / 'exports'), '--manifest', str(manifest),
                 '--dry-run']) == 0
    out = capsys.readouterr().out
    assert not manifest.exists()
    assert sorted(p.name for p in (tmp_path / 'exports').iterdir()) == ['hubtest_s0.search', 'hubtest_s1.search']
    assert 'repository: org/hubtest_s0.search (public' in out and 'add family.json' in out
    assert 'would get: hubtest_s0.search, hubtest_s1.search' in out
    card = (tmp_path / 'exports' / 'hubtest_s0.search' / 'README.md').read_text()
    assert '| 32 | 55.50 | 91.00 |' in card      # the member's search metrics from family.json


def test_publish_family_refusals(tmp_path, no_real_hub, capsys):
    family_dir = tiny_family(tmp_path).parent
    (family_dir / 'weights').mkdir()
    save_file(timm.create_model('hubtest_s0', num_classes=4).state_dict(),
              str(family_dir / 'weights' / 'hubtest_s0.safetensors'))
    kw = dict(org='org', out=tmp_path / 'exports', manifest=tmp_path / 'weights.json', dry_run=True)
    with pytest.raises(HubError, match='no inherited weights for hubtest_s1; write them with `python -m search '
                                       'export`, or pass --members'):
        publish_family(tag='t', family_dir=family_dir, members=['hubtest_s1'], **kw)
    with pytest.raises(HubError, match='--tag'):
        publish_family(tag='in.1k', family_dir=family_dir, **kw)
    with pytest.raises(HubError, match='not in family'):
        publish_family(tag='t', family_dir=family_dir, members=['nope'], **kw)
    with pytest.raises(HubError, match='either --run'):
        publish_family(tag='t', **kw)
    assert not (tmp_path / 'exports').exists() and not (tmp_path / 'weights.json').exists()
    # by default the members with weights are published (extrapolated members of a search have none)
    published = publish_family(tag='t', family_dir=family_dir, **kw)
    assert [p.tag for p in published] == ['hubtest_s0.t'] and 'skipping hubtest_s1' in capsys.readouterr().out


def test_failed_push_leaves_manifest_with_what_was_published(tmp_path):
    family = tiny_family(tmp_path)
    runs = {m: tmp_path / 'runs' / m for m in ('hubtest_s0', 'hubtest_s1')}
    for i, (m, run) in enumerate(runs.items()):
        make_run(run, m, family=family, seed=i)
    manifest = tmp_path / 'weights.json'
    with pytest.raises(HubError, match='cannot push to org/hubtest_s1.t'):
        publish_family('org', 't', tmp_path / 'exports', runs=runs, family=family, manifest=manifest,
                       api=FakeHfApi(fail_on_commit=2))
    assert sorted(load_manifest(manifest)) == ['hubtest_s0.t']
