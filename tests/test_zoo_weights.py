"""Weights: the no-weights error, local files, the manifest and offline Hub-cache loading, official checkpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import scalenet_models
from scalenet_models import PretrainedWeightsError, SpecError, reload_weights_manifest, weights_entries
from scalenet_models.weights import MANIFEST_FORMAT, WeightsEntry, load_manifest, save_manifest, sha256_file

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _random_model(name: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = timm.create_model(name, **kwargs)
    # non-trivial BN statistics, so a load that skipped buffers would be caught
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------------------------
# no published weights


@pytest.mark.parametrize('name', ['scalenet_s0', 'scarlet_a'])
def test_pretrained_without_weights_names_the_ways_forward(name):
    with pytest.raises(PretrainedWeightsError) as e:
        timm.create_model(name, pretrained=True)
    message = str(e.value)
    assert f'No published weights for {name!r}' in message
    assert f"timm.create_model('{name}', pretrained=True, pretrained_cfg_overlay=dict(file=" in message
    assert 'local-dir:' in message
    assert f'accelerate launch -m recipes.train --model {name}' in message
    assert 'pretrained=False' in message


def test_pretrained_without_weights_also_for_features_only():
    with pytest.raises(PretrainedWeightsError, match='No published weights'):
        timm.create_model('scarlet_b', pretrained=True, features_only=True)


# ----------------------------------------------------------------------------------------------
# local files


def test_pretrained_from_a_local_safetensors_file(tmp_path):
    source = _random_model('scarlet_c', seed=1)
    path = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), str(path))
    loaded = timm.create_model('scarlet_c', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    _assert_same_state(loaded.state_dict(), load_file(str(path)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)

    # a new classifier size keeps every other weight (timm drops the classifier, our filter allows it)
    tuned = timm.create_model('scarlet_c', pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=str(path)))
    assert tuned.classifier.out_features == 5
    assert torch.equal(tuned.conv_head.weight, source.conv_head.weight)

    # features_only loads the backbone part of the same file
    features = timm.create_model('scarlet_c', pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(features.conv_stem.weight, source.conv_stem.weight)


def test_local_file_of_another_model_is_refused(tmp_path):
    path = tmp_path / 'model.safetensors'
    save_file(_random_model('scarlet_b').state_dict(), str(path))
    with pytest.raises(PretrainedWeightsError, match='the checkpoint does not fit scarlet_c'):
        timm.create_model('scarlet_c', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


# ----------------------------------------------------------------------------------------------
# the manifest


def test_packaged_manifest_loads():
    assert isinstance(load_manifest(scalenet_models.weights.MANIFEST_PATH), dict)


def test_manifest_round_trip_and_validation(tmp_path):
    entry = WeightsEntry(tag='scarlet_c.test', hf_hub_id='org/scarlet_c.test', sha256='a' * 64,
                         num_classes=10, dataset='imagenette', metrics={'top1': 81.5})
    path = tmp_path / 'weights.json'
    save_manifest({entry.tag: entry}, path)
    assert load_manifest(path) == {entry.tag: entry}
    bad = {'format': MANIFEST_FORMAT, 'weights': {'scarlet_c.test': {'hf_hub_id': 'org/x', 'sha256': 'abc'}}}
    path.write_text(json.dumps(bad))
    with pytest.raises(SpecError, match='sha256: not a 64-digit hex sha256'):
        load_manifest(path)
    bad['weights']['scarlet_c.test'] = {'hf_hub_id': 'org/x', 'sha256': 'a' * 64, 'file': 'model.pth'}
    path.write_text(json.dumps(bad))
    with pytest.raises(SpecError, match='must be a .safetensors file'):
        load_manifest(path)
    path.write_text('{"weights": {}}')
    with pytest.raises(SpecError, match='not a weights manifest'):
        load_manifest(path)


def test_reload_weights_manifest_updates_pretrained_cfgs(tmp_path, monkeypatch):
    entry = WeightsEntry(tag='scarlet_c.test', hf_hub_id='scalenet-test/scarlet_c.test', sha256='b' * 64)
    path = tmp_path / 'weights.json'
    save_manifest({entry.tag: entry}, path)
    monkeypatch.setenv('SCALENET_WEIGHTS_MANIFEST', str(path))
    try:
        assert reload_weights_manifest() == {entry.tag: entry}
        assert weights_entries('scarlet_c') == [entry]
        assert 'scarlet_c.test' in timm.list_pretrained('scarlet_c*')
        cfg = timm.models.get_pretrained_cfg('scarlet_c.test')
        assert cfg.hf_hub_id == 'scalenet-test/scarlet_c.test'
        assert cfg.input_size == (3, 224, 224) and cfg.interpolation == 'bilinear'
    finally:
        monkeypatch.delenv('SCALENET_WEIGHTS_MANIFEST')
        reload_weights_manifest()
    assert weights_entries('scarlet_c') == []
    with pytest.raises(PretrainedWeightsError, match='No published weights'):
        timm.create_model('scarlet_c', pretrained=True)


# ----------------------------------------------------------------------------------------------
# the Hub path, offline from a pre-filled HF cache

REPO = 'scalenet-test/scarlet_c.test'
BAD_REPO = 'scalenet-test/scarlet_b.test'
COMMIT = '0123456789abcdef0123456789abcdef01234567'


def _fill_hub_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    folder = cache / ('models--' + repo.replace('/', '--'))
    (folder / 'refs').mkdir(parents=True)
    (folder / 'refs' / 'main').write_text(COMMIT)
    snapshot = folder / 'snapshots' / COMMIT
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        (snapshot / name).write_bytes(content)


OFFLINE_SCRIPT = textwrap.dedent('''
    import json, sys
    import huggingface_hub.constants as hc
    import timm, torch
    import scalenet_models
    from safetensors.torch import load_file
    from scalenet_models import PretrainedWeightsError

    expected = load_file(sys.argv[1])
    report = {"offline": hc.HF_HUB_OFFLINE, "cache": hc.HF_HUB_CACHE}

    def same(model):
        sd = model.state_dict()
        return sd.keys() == expected.keys() and all(torch.equal(sd[k], expected[k]) for k in sd)

    report["by_name"] = same(timm.create_model("scarlet_c", pretrained=True))
    report["by_tag"] = same(timm.create_model("scarlet_c.test", pretrained=True))
    report["hf_hub"] = same(timm.create_model("hf-hub:scalenet-test/scarlet_c.test", pretrained=True))
    try:
        timm.create_model("scarlet_b", pretrained=True)
        report["bad_sha"] = "loaded"
    except PretrainedWeightsError as e:
        report["bad_sha"] = str(e)
    try:
        timm.create_model("hf-hub:scalenet-test/scarlet_b.test", pretrained=True)
        report["bad_sha_hf_hub"] = "loaded"
    except PretrainedWeightsError as e:
        report["bad_sha_hf_hub"] = str(e)
    print("REPORT" + json.dumps(report))
''')


def test_offline_hub_cache_loading_checks_sha256(tmp_path):
    # weights for scarlet_c, and a scarlet_b upload whose manifest sha256 does not match the file
    weights = tmp_path / 'model.safetensors'
    save_file(_random_model('scarlet_c', seed=3).state_dict(), str(weights))
    bad_weights = tmp_path / 'bad.safetensors'
    save_file(_random_model('scarlet_b', seed=4).state_dict(), str(bad_weights))
    cache = tmp_path / 'hub'
    for repo, arch, path in ((REPO, 'scarlet_c', weights), (BAD_REPO, 'scarlet_b', bad_weights)):
        config = {'architecture': arch, 'num_classes': 1000, 'pretrained_cfg': {'input_size': [3, 224, 224]}}
        _fill_hub_cache(cache, repo, {'model.safetensors': path.read_bytes(), 'config.json': json.dumps(config).encode()})
    manifest = tmp_path / 'weights.json'
    save_manifest({
        'scarlet_c.test': WeightsEntry(tag='scarlet_c.test', hf_hub_id=REPO, sha256=sha256_file(weights)),
        'scarlet_b.test': WeightsEntry(tag='scarlet_b.test', hf_hub_id=BAD_REPO, sha256='0' * 64),
    }, manifest)

    # huggingface_hub reads HF_HUB_OFFLINE and the cache location at import: set them for a fresh process
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGINGFACE_'))}
    env.update(HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / 'hf_home'),
               SCALENET_WEIGHTS_MANIFEST=str(manifest), OMP_NUM_THREADS='1')
    script = tmp_path / 'offline_load.py'
    script.write_text(OFFLINE_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(weights)], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split('REPORT', 1)[1])
    assert report['offline'] is True and report['cache'] == str(cache)
    assert report['by_name'] and report['by_tag'] and report['hf_hub']
    for key in ('bad_sha', 'bad_sha_hf_hub'):
        message = report[key]
        assert f'{BAD_REPO}/model.safetensors has sha256 {sha256_file(bad_weights)}' in message, message
        assert f'the weights manifest expects {"0" * 64}' in message
        assert 'delete it from the HF cache' in message


# ----------------------------------------------------------------------------------------------
# official SCARLET-NAS checkpoints

# scarletnas.md: 0-based indices of the skipped searchable layers, and the 19 layers' stages (1..6)
SKIPPED = {'scarlet_a': set(), 'scarlet_b': {8, 16}, 'scarlet_c': {3, 4, 15}}
LAYER_STAGE = [1] * 2 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [6]
FIXED = {'conv_stem.': 'stem.0.', 'bn1.': 'stem.1.', 'blocks.0.0.conv_dw.': 'separable_conv.0.',
         'blocks.0.0.bn1.': 'separable_conv.1.', 'blocks.0.0.conv_pw.': 'separable_conv.3.',
         'blocks.0.0.bn2.': 'separable_conv.4.', 'conv_head.': 'conv_before_pooling.0.',
         'bn2.': 'conv_before_pooling.1.', 'classifier.': 'classifier.'}
BLOCK = {'conv_pw.': 'conv1.', 'bn1.': 'bn1.', 'conv_dw.': 'conv2.', 'bn2.': 'bn2.',
         'se.conv_reduce.': 'mid_se.squeeze_conv.', 'se.conv_expand.': 'mid_se.excite_conv.',
         'conv_pwl.': 'conv3.', 'bn3.': 'bn3.'}


def to_official(name: str, state_dict: dict, num_batches_tracked: bool = True) -> dict:
    """The official SCARLET-NAS layout of a timm state dict (the reverse of the key map in scarletnas.md)."""
    layers = [i for i in range(19) if i not in SKIPPED[name]]
    position = {}
    for i in layers:
        stage = LAYER_STAGE[i]
        position[(stage, sum(1 for (s, _) in position if s == stage))] = i
    out = {}
    for key, value in state_dict.items():
        if key.endswith('num_batches_tracked') and not num_batches_tracked:
            continue
        fixed = next((p for p in FIXED if key.startswith(p)), None)
        if fixed:
            out[FIXED[fixed] + key[len(fixed):]] = value
            continue
        _, s, j, rest = key.split('.', 3)
        prefix = next(p for p in BLOCK if rest.startswith(p))
        out[f'mb_module.{position[(int(s), int(j))]}.{BLOCK[prefix]}{rest[len(prefix):]}'] = value
    return out


def _write_official(path: Path, name: str, state_dict: dict, **kwargs) -> Path:
    torch.save({'model_state': to_official(name, state_dict, **kwargs)}, path)
    return path


# every model's layer mapping, and the file with and without num_batches_tracked
@pytest.mark.parametrize('name, num_batches_tracked', [('scarlet_a', True), ('scarlet_b', False), ('scarlet_c', True),
                                                       ('scarlet_c', False)])
def test_official_checkpoint_round_trip(name, num_batches_tracked, tmp_path):
    source = _random_model(name, seed=5)
    official = to_official(name, source.state_dict(), num_batches_tracked)
    assert any(k.startswith('mb_module.18.') for k in official)  # the last layer keeps its index
    for i in SKIPPED[name]:
        assert not any(k.startswith(f'mb_module.{i}.') for k in official)
    path = tmp_path / f'Scarlet{name[-1].upper()}.pth.tar'
    torch.save({'model_state': official}, path)
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
    for k, v in source.state_dict().items():
        if not k.endswith('num_batches_tracked'):
            assert torch.equal(loaded.state_dict()[k], v), k


def _mangled(sd: dict, how: str) -> dict:
    sd = dict(sd)
    if how == 'missing':
        del sd['mb_module.3.conv2.weight']
    elif how == 'shape':
        sd['mb_module.3.conv2.weight'] = sd['mb_module.3.conv2.weight'][:, :, :3, :3].clone()
    elif how == 'nan':
        sd['mb_module.3.bn2.running_var'] = torch.full_like(sd['mb_module.3.bn2.running_var'], float('nan'))
    elif how == 'extra_layer':
        sd['mb_module.19.conv1.weight'] = sd['mb_module.18.conv1.weight']
    elif how == 'unknown_key':
        sd['mb_module.3.conv9.weight'] = sd['mb_module.3.conv2.weight']
    return sd


@pytest.mark.parametrize('how, message', [
    ('missing', r"the checkpoint does not fit scarlet_a: missing \['blocks.2.1.conv_dw.weight'\]"),
    ('shape', r'shape mismatch .*blocks.2.1.conv_dw.weight: checkpoint \(120, 1, 3, 3\) vs model \(120, 1, 7, 7\)'),
    ('nan', r"NaN or Inf values in 'blocks.2.1.bn2.running_var': it is damaged"),
    ('extra_layer', r'has mb_module.19, but the space has 19 layers'),
    ('unknown_key', r"unexpected key 'mb_module.3.conv9.weight'"),
])
def test_mangled_official_checkpoint_is_refused(how, message, tmp_path):
    sd = to_official('scarlet_a', _random_model('scarlet_a').state_dict())
    path = tmp_path / 'ScarletA.pth.tar'
    torch.save({'model_state': _mangled(sd, how)}, path)
    with pytest.raises(PretrainedWeightsError, match=message):
        timm.create_model('scarlet_a', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_official_checkpoint_of_another_model_is_refused(tmp_path):
    path = _write_official(tmp_path / 'ScarletB.pth.tar', 'scarlet_b', _random_model('scarlet_b').state_dict())
    with pytest.raises(PretrainedWeightsError, match='the checkpoint does not fit scarlet_a: .*It belongs to another '
                                                     'model or is damaged'):
        timm.create_model('scarlet_a', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def _leave_marker(path):
    """Called only if a pickle is executed: the proof that a checkpoint ran code."""
    Path(path).write_text('executed')


class _CodeInPickle:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _leave_marker, (self.marker,)


def test_official_checkpoints_are_read_with_weights_only(tmp_path):
    marker = tmp_path / 'marker'
    sd = to_official('scarlet_c', _random_model('scarlet_c').state_dict())
    path = tmp_path / 'ScarletC.pth.tar'
    torch.save({'model_state': sd, 'extra': _CodeInPickle(str(marker))}, path)
    with pytest.raises(Exception, match='weights_only'):
        timm.create_model('scarlet_c', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert not marker.exists()
