"""MCEA and NSGA-II with fake fitness functions: feasibility, extrapolation, errors, kill -9 and resume."""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalenet_models.spec import write_json_atomic
from search.cli import demo_space, middle_window
from search.evolution import (MCEA, InfeasibleError, MCEAConfig, NSGAConfig, SearchStateError, extrapolate_scaling,
                              fit_log_slopes, nsga2_search)
from search.space import load_space

ROOT = Path(__file__).resolve().parents[1]
TINY_RES = [[20], [16, 18, 20], [20, 22, 24], [30, 32, 34]]


class FakeFitness:
    """A deterministic stand-in for held-out top-1: bigger and 5x5-rich nets score higher, plus hashed noise.

    Persists its cache like the real evaluator, and counts real evaluations.
    """

    def __init__(self, space, path: str | None = None, delay: float = 0.0):
        self.space, self.path, self.delay = space, path, delay
        self.cache = json.loads(Path(path).read_text()) if path and Path(path).is_file() else {}
        self.num_evaluated = 0

    def score(self, cand) -> float:
        k5 = sum(b.kernel == 5 for s in cand.net.stages for b in s.blocks)
        noise = int(hashlib.sha1(cand.key().encode()).hexdigest()[:6], 16) / 16 ** 6
        return 30 + 4 * math.log2(self.space.macs(cand, 10)) / 10 + 0.7 * k5 + noise

    def evaluate(self, cands):
        new = False
        keys = [c.key() for c in cands]
        for c, k in zip(cands, keys):
            if k not in self.cache:
                time.sleep(self.delay)
                self.cache[k] = self.score(c)
                self.num_evaluated += 1
                new = True
        if new and self.path:
            write_json_atomic(self.path, self.cache)
        return [self.cache[k] for k in keys]


def tiny_scaling_space():
    return load_space(demo_space('scalenet', width_scale=0.125, resolutions=TINY_RES, max_depth=2))


def small_cfg(space, **kw) -> MCEAConfig:
    base = dict(iterations=2, population=8, generations=3, init_bases=3, max_triples=3, tolerance=0.25,
                base_macs=middle_window(space, samples=100, num_classes=10), extrapolate=2, macs_classes=10, seed=5)
    base.update(kw)
    return MCEAConfig(**base)


# ----------------------------------------------------------------------------------------------
# extrapolation: synthetic inputs with a known answer


def test_fit_log_slopes_recovers_exponential_trends():
    stages = [1, 2, 3]
    mults = [(math.exp(0.1 * s), math.exp(0.05 * s), math.exp(-0.02 * s)) for s in stages]
    assert fit_log_slopes(stages, mults) == pytest.approx([0.1, 0.05, -0.02], abs=1e-12)


def test_extrapolation_hits_the_flops_target_along_the_fitted_trend():
    bd, bw, br, r0, base = 0.1, 0.05, 0.08, 224, 300e6
    triples = [(math.exp(bd * s), math.exp(bw * s), r0 * math.exp(br * s)) for s in (1, 2, 3)]
    macs = lambda d, w, r: base * d * w * w * (r / r0) ** 2   # a MACs model with a closed-form answer
    for target in (4, 5):
        t = target * math.log(2) / (bd + 2 * bw + 2 * br)        # exp((bd + 2bw + 2br) t) = 2^target
        d, w, r = extrapolate_scaling([1, 2, 3], triples, r0, target, macs, base)
        assert d == pytest.approx(math.exp(bd * t), abs=2e-3)
        assert w == pytest.approx(math.exp(bw * t), abs=2e-3)
        assert abs(r - r0 * math.exp(br * t)) <= 1
        assert macs(d, w, r) == pytest.approx(base * 2 ** target, rel=0.01)


def test_extrapolation_refuses_a_strategy_that_does_not_grow():
    with pytest.raises(InfeasibleError, match='does not grow'):
        extrapolate_scaling([1, 2], [(1.0, 1.0, 224), (1.0, 1.0, 224)], 224, 3, lambda d, w, r: 1.0, 1.0)


# ----------------------------------------------------------------------------------------------
# MCEA


def test_mcea_finds_a_feasible_family_and_improves_on_its_start():
    space = tiny_scaling_space()
    fit = FakeFitness(space)
    mcea = MCEA(space, fit, small_cfg(space), progress=False)
    res = mcea.run()
    assert len(res.scalings) == len(space.scaling_stages) + 2 and res.top1[-2:] == [None, None]
    lo, hi = mcea.window
    base_macs = mcea.base_macs(res.base)
    assert lo <= base_macs <= hi
    for s, t in enumerate(res.scalings[1:len(space.scaling_stages)], 1):
        assert t in space.scaling_stages[s]
        assert mcea.off_target(res.base, t, s) <= 0.25
    assert res.macs == sorted(res.macs)            # every member is larger than the one before
    assert res.macs[-1] == pytest.approx(base_macs * 2 ** (len(res.scalings) - 1), rel=0.25)
    init = next(e for e in mcea.state.events if e['phase'] == 'init')
    first = fit.evaluate([space.candidate(space.genes_to_base(space.base_to_genes(_base(init['base']))),
                                          _scaling(init['scalings'][str(s)])) for s in (1, 2, 3)])
    assert res.fitness >= sum(first) / 3 - 1e-9    # the chain never ends worse than it started
    assert res.history[-1]['fitness'] == pytest.approx(res.fitness)


def _base(d):
    from search.space import BaseArch
    return BaseArch(tuple(d['depths']), tuple(tuple(k) for k in d['kernels']))


def _scaling(d):
    from search.space import Scaling
    return Scaling(d['depth'], d['width'], d['resolution'])


def test_infeasible_targets_name_the_target_and_the_range():
    space = tiny_scaling_space()
    with pytest.raises(InfeasibleError, match=r'base MACs window 1\.\.2: .*this space spans'):
        MCEA(space, FakeFitness(space), small_cfg(space, base_macs=(1, 2)), progress=False).run()
    with pytest.raises(InfeasibleError, match=r'scaling stage 1: .*2x the base within ±0%.*grid spans'):
        MCEA(space, FakeFitness(space), small_cfg(space, tolerance=1e-6), progress=False).run()


def test_mcea_refuses_a_layerwise_space():
    space = load_space(demo_space('scarlet', width_scale=0.125, resolutions=TINY_RES))
    with pytest.raises(ValueError, match='NSGA-II'):
        MCEA(space, FakeFitness(space), MCEAConfig())


_SCRIPT = '''
import sys
sys.path.insert(0, {tests!r})
from test_search_evolution import FakeFitness, tiny_scaling_space, small_cfg
from search.evolution import MCEA
space = tiny_scaling_space()
MCEA(space, FakeFitness(space, {cache!r}, delay=0.01), small_cfg(space), state_path={state!r}, progress=False).run()
'''


def _search(tmp, name):
    space = tiny_scaling_space()
    fit = FakeFitness(space, str(tmp / f'{name}_cache.json'))
    res = MCEA(space, fit, small_cfg(space), state_path=tmp / f'{name}_state.json', progress=False).run()
    return res, fit.num_evaluated


def test_search_killed_mid_way_resumes_to_the_same_family_without_reevaluating(tmp_path):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    code = _SCRIPT.format(tests=str(ROOT / 'tests'), cache=str(tmp_path / 'cut_cache.json'),
                          state=str(tmp_path / 'cut_state.json'))
    proc = subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    full, full_evaluated = _search(tmp_path, 'full')   # the uninterrupted search, in this process meanwhile
    state = tmp_path / 'cut_state.json'
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and len(json.loads(state.read_text())['events']) >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, 'the search finished before it could be killed'
    done_before = len(json.loads((tmp_path / 'cut_cache.json').read_text()))
    assert 0 < done_before < full_evaluated
    again, again_evaluated = _search(tmp_path, 'cut')
    assert again.base == full.base and again.scalings == full.scalings and again.top1 == full.top1
    assert again_evaluated + done_before == full_evaluated   # nothing saved was scored twice


def test_a_saved_state_from_other_settings_is_refused(tmp_path):
    space = tiny_scaling_space()
    state = tmp_path / 'state.json'
    MCEA(space, FakeFitness(space), small_cfg(space, iterations=1, generations=1), state, progress=False).run()
    with pytest.raises(SearchStateError, match='other settings.*config'):
        MCEA(space, FakeFitness(space), small_cfg(space, iterations=1, generations=2), state, progress=False)


# ----------------------------------------------------------------------------------------------
# NSGA-II


def test_nsga2_front_is_non_dominated_and_the_choice_fits_the_budget():
    space = load_space(demo_space('scarlet', width_scale=0.25, resolutions=TINY_RES))
    fit = FakeFitness(space)
    probe = sorted(space.macs(space.sample(__import__('random').Random(i))) for i in range(50))
    budget = probe[len(probe) // 2]
    res = nsga2_search(space, fit, NSGAConfig(population=10, generations=3, max_macs=budget, seed=1), progress=False)
    assert res.best_macs <= budget
    assert res.best_top1 == max(e['top1'] for e in res.evaluated if e['macs'] <= budget)
    pts = [(p['top1'], p['macs']) for p in res.front]
    for a in pts:
        assert not any(b[0] >= a[0] and b[1] <= a[1] and b != a for b in pts)
    assert len(res.evaluated) == fit.num_evaluated > 10
    with pytest.raises(InfeasibleError, match='max MACs 10: no candidate fits'):
        nsga2_search(space, fit, NSGAConfig(population=4, generations=1, max_macs=10), progress=False)
