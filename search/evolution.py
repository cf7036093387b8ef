"""MCEA (ScaleNet's Markov-chain evolution) and NSGA-II (SCARLET), on pymoo, checkpointed per generation.

MCEA's state is (base architecture, one (d, w, r) per scaling stage). Initialisation samples feasible
bases (MACs in the base window) and ranks, per scaling stage s, the grid's (d, w, r) whose scaled
MACs are 2^s x base within a tolerance by their mean fitness over those bases. Then K times: (a) a
pymoo GA over bases with the scalings fixed (fitness = mean held-out top-1 of the base's scaled
members at stages 1..S; infeasible bases are penalised), (b) a grid search of each stage's feasible
(d, w, r) with the base fixed. Each new state depends only on the current one: the Markov chain.

Resume without pickles: every random choice is seeded (pymoo's own generator per GA run) and every
fitness is persisted by the evaluator's cache, so a restarted search replays the finished part from
the cache (no evaluation repeated), checks the replay against the saved state and carries on.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
from tqdm.auto import tqdm

from scalenet_models.spec import write_json_atomic

PENALTY = 1000.0


class InfeasibleError(ValueError):
    """No candidate meets a FLOPs target; the message names the target and the achievable range."""


class SearchStateError(ValueError):
    """A saved search state that does not belong to the current search (other settings)."""


class Fitness(Protocol):
    """Anything that scores candidates (held-out top-1 in %); evaluation.Evaluator is the real one."""
    num_evaluated: int

    def evaluate(self, cands: Sequence) -> list[float]: ...


# ----------------------------------------------------------------------------------------------
# settings and checkpointed state


@dataclass
class MCEAConfig:
    """MCEA settings; the defaults are the authors' GA settings scaled down to a CPU-sized search."""
    iterations: int = 2              # K alternations (authors: 8)
    population: int = 16             # GA population (authors: 64)
    generations: int = 5             # GA generations per alternation (authors: 40)
    init_bases: int = 8              # feasible bases sampled for the initialisation
    max_triples: int = 12            # per stage, the feasible (d, w, r) closest to the target that are scored
    grid_limit: int | None = None    # (b): None scores the stage's whole feasible grid, N the N closest to target
    tolerance: float = 0.1           # |MACs / (2^s x base MACs) - 1| allowed
    base_macs: tuple[int, int] | None = None   # None: the space's window (or no window if it has none)
    extrapolate: int = 2             # members beyond the trained scaling stages
    macs_classes: int = 1000         # classifier size used for MACs (ImageNet's, as in the papers)
    seed: int = 0


@dataclass
class NSGAConfig:
    """NSGA-II settings for a layerwise (SCARLET) space: accuracy vs MACs."""
    population: int = 16
    generations: int = 5
    max_macs: int | None = None      # None: the space's macs_window upper bound, if any
    macs_classes: int = 1000
    seed: int = 0


class SearchCheckpoint:
    """The search state file: written atomically after every generation, replay-checked on resume."""

    def __init__(self, path: str | Path | None, identity: dict):
        self.path = Path(path) if path else None
        self.identity = identity
        self.saved_events: list = []
        self.events: list = []
        if self.path and self.path.is_file():
            import json

            saved = json.loads(self.path.read_text())
            if saved.get('identity') != identity:
                diffs = [k for k in sorted(set(saved.get('identity', {})) | set(identity))
                         if saved.get('identity', {}).get(k) != identity.get(k)]
                raise SearchStateError(f'{self.path}: holds a search with other settings ({", ".join(diffs)}); '
                                       f'rerun with the original settings or choose another --out')
            self.saved_events = saved['events']

    def record(self, event: dict) -> None:
        """Append an event (generation finished, state chosen); replayed events must match the saved ones."""
        event = _jsonable(event)
        i = len(self.events)
        if i < len(self.saved_events) and self.saved_events[i] != event:
            raise SearchStateError(f'{self.path}: the resumed search diverged from the saved one at event {i} '
                                   f'({self.saved_events[i]} saved, {event} now); delete the file to start over')
        self.events.append(event)
        if self.path and len(self.events) > len(self.saved_events):
            write_json_atomic(self.path, {'identity': self.identity, 'events': self.events})

    @property
    def replaying(self) -> bool:
        return len(self.events) < len(self.saved_events)


def _jsonable(x):
    import json

    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, 'item') else list(o)))


# ----------------------------------------------------------------------------------------------
# pymoo plumbing


def _pymoo_ops(space, canonical: Callable[[list[int]], list[int]]):
    """pymoo's integer GA operators: two-point crossover, polynomial mutation (eta 3, rate 1/n), rounding."""
    from pymoo.core.repair import Repair
    from pymoo.operators.crossover.pntx import TwoPointCrossover
    from pymoo.operators.mutation.pm import PM

    lo, hi = space.gene_bounds()

    class CanonicalRounding(Repair):
        """Round to integers inside the bounds, then to the canonical genes (inactive genes zeroed)."""

        def _do(self, problem, X, **kwargs):
            X = np.clip(np.rint(X), lo, hi).astype(int)
            return np.array([canonical(list(x)) for x in X], dtype=float)

    n = space.num_genes
    repair = CanonicalRounding()
    return (TwoPointCrossover(repair=repair), PM(prob=1.0, prob_var=1.0 / n, eta=3, vtype=float, repair=repair),
            repair)


def _run_pymoo(algorithm, problem, generations: int, seed: int, on_generation: Callable[[int, object], None]):
    """Ask-and-tell loop so that the caller can checkpoint after every generation."""
    algorithm.setup(problem, termination=('n_gen', generations), seed=seed, verbose=False)
    gen = 0
    while algorithm.has_next():
        pop = algorithm.ask()
        algorithm.evaluator.eval(problem, pop)
        algorithm.tell(infills=pop)
        gen += 1
        on_generation(gen, algorithm)
    return algorithm.result()


# ----------------------------------------------------------------------------------------------
# extrapolation of the scaling strategy


def fit_log_slopes(stages: Sequence[int], multipliers: Sequence[Sequence[float]]) -> list[float]:
    """Least-squares slope b of log(m) = b * s through the base (s = 0, m = 1), one per multiplier column."""
    s = np.asarray(stages, dtype=float)
    if not np.any(s):
        raise ValueError('stages: need at least one scaling stage above 0 to fit a trend')
    logs = np.log(np.asarray(multipliers, dtype=float))
    return [float(np.dot(s, logs[:, j]) / np.dot(s, s)) for j in range(logs.shape[1])]


def extrapolate_scaling(stages: Sequence[int], triples: Sequence[tuple[float, float, int]], base_resolution: int,
                        target_stage: int, macs_of: Callable[[float, float, int], float], base_macs: float,
                        ) -> tuple[float, float, int]:
    """(d, w, r) for ``target_stage`` beyond the searched ones (the project's documented rule).

    1. Fit ``log m = b_m * s`` (least squares, through the base) for m = d, w and r / r0 over the
       searched stages. 2. Walk along that trend, ``m(t) = exp(b_m * t)``, to the ``t`` where the
       MACs equal the FLOPs target ``2^target_stage x base_macs`` (bisection; MACs grow with t).
    d and w are rounded to 3 decimals and r to an integer.
    """
    mults = [(d, w, r / base_resolution) for d, w, r in triples]
    bd, bw, br = fit_log_slopes(stages, mults)
    if bd <= 0 and bw <= 0 and br <= 0:
        raise InfeasibleError('extrapolation: the searched scaling strategy does not grow with the stage '
                              f'(slopes d {bd:.3g}, w {bw:.3g}, r {br:.3g}); nothing to extrapolate')
    target = base_macs * 2 ** target_stage

    def at(t):
        return (round(math.exp(bd * t), 3), round(math.exp(bw * t), 3),
                max(8, int(round(base_resolution * math.exp(br * t)))))

    lo, hi = 0.0, float(max(stages))
    while macs_of(*at(hi)) < target:
        lo, hi = hi, hi * 2
        if hi > 1e3:
            raise InfeasibleError(f'extrapolation: the trend never reaches {target:.4g} MACs')
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs_of(*at(mid)) < target else (lo, mid)
    # the rounded point on either side of the target that lands closer to it
    return min((at(lo), at(hi)), key=lambda p: abs(macs_of(*p) - target))


# ----------------------------------------------------------------------------------------------
# MCEA


@dataclass
class MCEAResult:
    base: object
    scalings: list                 # Scaling per member: searched stages 0..S, then extrapolated ones
    top1: list                     # held-out top-1 per member (None for extrapolated members)
    macs: list
    fitness: float                 # mean top-1 of the searched stages 1..S
    history: list = field(default_factory=list)
    evaluated: list = field(default_factory=list)   # (macs, top1, stage) of every scored candidate


class MCEA:
    """ScaleNet's joint search of a base architecture and its scaling strategy."""

    def __init__(self, space, fitness: Fitness, cfg: MCEAConfig = MCEAConfig(), state_path=None,
                 identity: dict | None = None, progress: bool = True):
        if space.kind != 'scaling':
            raise ValueError(f'MCEA needs a scaling space; {space.name!r} is {space.kind} (use NSGA-II)')
        self.space, self.fitness, self.cfg, self.progress = space, fitness, cfg, progress
        self.num_stages = len(space.scaling_stages)   # stage 0 is the base itself
        window = cfg.base_macs or space.base_macs
        self.window = tuple(window) if window else None
        self.state = SearchCheckpoint(state_path, {'search': 'mcea', 'space': space.to_dict(), 'config': _jsonable(asdict(cfg)),
                                                   **(identity or {})})
        self._cands: dict = {}
        self._macs: dict = {}
        self.evaluated: dict = {}

    # -- helpers (memoised on the hashable (base, scaling) pair: candidate keys are slow to compute)
    def cand(self, base, scaling):
        k = (base, scaling)
        if k not in self._cands:
            self._cands[k] = self.space.candidate(base, scaling)
        return self._cands[k]

    def macs_of(self, base, scaling) -> int:
        k = (base, scaling)
        if k not in self._macs:
            self._macs[k] = self.space.macs(self.cand(base, scaling), self.cfg.macs_classes)
        return self._macs[k]

    def base_macs(self, base) -> int:
        return self.macs_of(base, self.space.scaling_stages[0][0])

    def in_window(self, base) -> bool:
        return self.window is None or self.window[0] <= self.base_macs(base) <= self.window[1]

    def off_target(self, base, scaling, stage: int) -> float:
        """|MACs / (2^s x base MACs) - 1|: 0 on target."""
        return abs(self.macs_of(base, scaling) / (2 ** stage * self.base_macs(base)) - 1)

    def feasible(self, base, scaling, stage: int) -> bool:
        return self.off_target(base, scaling, stage) <= self.cfg.tolerance

    def score(self, items: list[tuple[object, object, int]]) -> list[float]:
        """Fitness of (base, scaling, stage) members; every scored one is kept for the report."""
        top1 = self.fitness.evaluate([self.cand(b, t) for b, t, _ in items])
        for (b, t, s), a in zip(items, top1):
            self.evaluated[(b, t)] = (self.macs_of(b, t), float(a), s)
        return top1

    def _canonical(self, genes: list[int]) -> list[int]:
        return self.space.base_to_genes(self.space.genes_to_base(genes))

    # -- initialisation
    def sample_feasible_bases(self, rng: random.Random, n: int) -> list:
        bases, seen, tries = [], set(), 0
        while len(bases) < n and tries < 500 * n:
            tries += 1
            b = self.space.sample_base(rng)
            if b not in seen and self.in_window(b):
                seen.add(b)
                bases.append(b)
        if not bases:
            lo, hi = self.achievable_base_macs()
            raise InfeasibleError(f'base MACs window {self.window[0]:,}..{self.window[1]:,}: no sampled base fits '
                                  f'(this space spans {lo:,}..{hi:,} MACs at {self.cfg.macs_classes} classes); '
                                  f'pass --base-macs LOW HIGH inside that range')
        return bases

    def achievable_base_macs(self) -> tuple[int, int]:
        sp = self.space
        small = type(sp.sample_base(random.Random(0)))(
            tuple(min(st.depths) for st in sp.stages), tuple((min(st.kernels),) * min(st.depths) for st in sp.stages))
        big = type(small)(tuple(max(st.depths) for st in sp.stages),
                          tuple((max(st.kernels),) * max(st.depths) for st in sp.stages))
        return self.base_macs(small), self.base_macs(big)

    def stage_triples(self, bases: list, stage: int) -> list:
        """The stage's grid triples feasible for at least one base, closest to the target first."""
        grid = self.space.scaling_stages[stage]
        off = {t: [self.off_target(b, t, stage) for b in bases] for t in grid}
        ok = [t for t in grid if min(off[t]) <= self.cfg.tolerance]
        if not ok:
            ratios = [self.macs_of(b, t) / self.base_macs(b) for t in grid for b in bases]
            raise InfeasibleError(
                f'scaling stage {stage}: no (d, w, r) of its grid reaches the FLOPs target 2^{stage} = '
                f'{2 ** stage}x the base within ±{self.cfg.tolerance:.0%} (the grid spans '
                f'{min(ratios):.2f}x..{max(ratios):.2f}x for the sampled bases); widen --tolerance or change '
                f'scaling_stages[{stage}] of the space')
        ok.sort(key=lambda t: (float(np.mean(off[t])), t.depth, t.width, t.resolution))
        return ok[:self.cfg.max_triples]

    def initialise(self, rng: random.Random):
        bases = self.sample_feasible_bases(rng, self.cfg.init_bases)
        best = {}
        for s in range(1, self.num_stages):
            triples = self.stage_triples(bases, s)
            pairs = [(t, b) for t in triples for b in bases if self.feasible(b, t, s)]
            top1 = self.score([(b, t, s) for t, b in pairs])
            means = {t: float(np.mean([a for (tt, _), a in zip(pairs, top1) if tt == t])) for t in triples}
            best[s] = max(triples, key=lambda t: means[t])
        mean_base = {b: float(np.mean(self.score([(b, best[s], s) for s in range(1, self.num_stages)])))
                     for b in bases if all(self.feasible(b, best[s], s) for s in best)}
        base = max(mean_base, key=mean_base.get) if mean_base else bases[0]
        return base, best, bases

    # -- (a) GA over bases
    def base_fitness(self, bases: list, scalings: dict) -> list[float]:
        """Objective to minimise: 100 - mean top-1 at stages 1..S, or a penalty when infeasible."""
        objective, todo = [], []
        for b in bases:
            if not self.in_window(b):
                lo, hi = self.window
                m = self.base_macs(b)
                objective.append(PENALTY + abs(m - (lo if m < lo else hi)) / hi)
                continue
            bad = sum(max(0.0, self.off_target(b, scalings[s], s) - self.cfg.tolerance) for s in scalings)
            objective.append(PENALTY + bad if bad > 0 else None)
            if bad == 0:
                todo += [(b, scalings[s], s) for s in scalings]
        top1 = iter(self.score(todo)) if todo else iter(())
        n = len(scalings)
        return [o if o is not None else 100.0 - float(np.mean([next(top1) for _ in range(n)])) for o in objective]

    def ga_bases(self, it: int, current, scalings: dict, seeds: list):
        from pymoo.algorithms.soo.nonconvex.ga import GA
        from pymoo.core.problem import Problem

        space, mcea = self.space, self
        lo, hi = space.gene_bounds()

        class BaseProblem(Problem):
            def __init__(self):
                super().__init__(n_var=space.num_genes, n_obj=1, xl=np.array(lo), xu=np.array(hi), vtype=int)

            def _evaluate(self, X, out, *args, **kwargs):
                bases = [space.genes_to_base([int(v) for v in x]) for x in np.rint(X).astype(int)]
                out['F'] = np.array(mcea.base_fitness(bases, scalings)).reshape(-1, 1)

        crossover, mutation, repair = _pymoo_ops(space, self._canonical)
        init = [space.base_to_genes(b) for b in [current] + [b for b in seeds if b != current]]
        rng = random.Random(f'{self.cfg.seed}:ga-init:{it}')
        seen = {tuple(g) for g in init}
        while len(init) < self.cfg.population:
            b = self.sample_feasible_bases(rng, 1)[0]
            g = space.base_to_genes(b)
            if tuple(g) not in seen:
                seen.add(tuple(g))
                init.append(g)
        algorithm = GA(pop_size=self.cfg.population, sampling=np.array(init[:self.cfg.population], dtype=float),
                       crossover=crossover, mutation=mutation, repair=repair, eliminate_duplicates=True)
        bar = tqdm(total=self.cfg.generations, desc=f'MCEA {it + 1}/{self.cfg.iterations} (a) bases',
                   disable=not self.progress, leave=False)

        def on_gen(gen, alg):
            bar.update(1)
            f = float(alg.opt.get('F')[0, 0])
            self.state.record({'iteration': it, 'phase': 'ga', 'generation': gen, 'best_objective': round(f, 6)})

        res = _run_pymoo(algorithm, BaseProblem(), self.cfg.generations, _int_seed(self.cfg.seed, 'ga', it), on_gen)
        bar.close()
        best = space.genes_to_base([int(v) for v in np.rint(res.X)])
        return best if res.F[0] < PENALTY else current

    # -- (b) per-stage grid search
    def grid_scalings(self, base, scalings: dict) -> dict:
        new = {}
        for s in scalings:
            grid = [t for t in self.space.scaling_stages[s] if self.feasible(base, t, s)] or [scalings[s]]
            if self.cfg.grid_limit:
                grid = sorted(grid, key=lambda t: (self.off_target(base, t, s), t.depth, t.width, t.resolution))
                grid = grid[:self.cfg.grid_limit] + ([scalings[s]] if scalings[s] not in grid[:self.cfg.grid_limit]
                                                      and self.feasible(base, scalings[s], s) else [])
            top1 = self.score([(base, t, s) for t in grid])
            new[s] = grid[int(np.argmax(top1))]
        return new

    def run(self) -> MCEAResult:
        rng = random.Random(f'{self.cfg.seed}:mcea-init')
        base, scalings, bases = self.initialise(rng)
        self.state.record({'phase': 'init', 'base': asdict(base), 'scalings': {s: asdict(t) for s, t in scalings.items()}})
        history = []
        for it in range(self.cfg.iterations):
            base = self.ga_bases(it, base, scalings, bases)
            scalings = self.grid_scalings(base, scalings)
            fit = 100.0 - self.base_fitness([base], scalings)[0]
            event = {'phase': 'state', 'iteration': it, 'base': asdict(base),
                     'scalings': {s: asdict(t) for s, t in scalings.items()}, 'fitness': round(fit, 6)}
            self.state.record(event)
            history.append(event)
        return self.finish(base, scalings, history)

    def finish(self, base, scalings: dict, history: list) -> MCEAResult:
        space = self.space
        members = [space.scaling_stages[0][0]] + [scalings[s] for s in sorted(scalings)]
        top1 = self.score([(base, t, s) for s, t in enumerate(members)])
        r0 = members[0].resolution
        base_m = self.base_macs(base)
        Scaling = type(members[0])
        searched = list(range(1, self.num_stages))
        for extra in range(self.cfg.extrapolate):
            target = self.num_stages + extra
            d, w, r = extrapolate_scaling(
                searched, [(t.depth, t.width, t.resolution) for t in members[1:self.num_stages]], r0, target,
                lambda d, w, r: self.macs_of(base, Scaling(d, w, r)), base_m)
            members.append(Scaling(d, w, r))
            top1.append(None)
        macs = [self.macs_of(base, t) for t in members]
        evaluated = [{'macs': m, 'top1': a, 'stage': s} for m, a, s in self.evaluated.values()]
        fitness = float(np.mean(top1[1:self.num_stages])) if self.num_stages > 1 else float(top1[0])
        return MCEAResult(base, members, top1, macs, fitness, history, evaluated)


def _int_seed(*parts) -> int:
    from .data import _seed_of

    return _seed_of(*parts) % (2 ** 31)


# ----------------------------------------------------------------------------------------------
# NSGA-II for layerwise spaces


@dataclass
class NSGAResult:
    best: object                   # the chosen candidate (highest top-1 within the MACs budget)
    best_top1: float
    best_macs: int
    front: list                    # [{'genes', 'top1', 'macs'}] non-dominated among all evaluated
    evaluated: list = field(default_factory=list)


def nsga2_search(space, fitness: Fitness, cfg: NSGAConfig = NSGAConfig(), state_path=None,
                 identity: dict | None = None, progress: bool = True) -> NSGAResult:
    """NSGA-II over a layerwise space: minimise (100 - top-1, MACs); a MACs budget is a constraint."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    if space.kind != 'layerwise':
        raise ValueError(f'NSGA-II search needs a layerwise space; {space.name!r} is {space.kind} (use MCEA)')
    max_macs = cfg.max_macs or (space.macs_window[1] if space.macs_window else None)
    state = SearchCheckpoint(state_path, {'search': 'nsga2', 'space': space.to_dict(), 'config': _jsonable(asdict(cfg)),
                                          **(identity or {})})
    lo, hi = space.gene_bounds()
    records: dict[tuple, tuple[float, int]] = {}

    if max_macs is not None:
        smallest = min(space.macs(space.sample(random.Random(i)), cfg.macs_classes) for i in range(200))
        if smallest > max_macs:
            raise InfeasibleError(f'max MACs {max_macs:,}: no candidate fits (the smallest of 200 samples has '
                                  f'{smallest:,} MACs at {cfg.macs_classes} classes); raise --max-macs')

    class LayerProblem(Problem):
        def __init__(self):
            super().__init__(n_var=space.num_genes, n_obj=2, n_ieq_constr=1 if max_macs else 0,
                             xl=np.array(lo), xu=np.array(hi), vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            genes = [tuple(int(v) for v in x) for x in np.rint(X).astype(int)]
            cands = [space.genes_to_candidate(g) for g in genes]
            macs = [space.macs(c, cfg.macs_classes) for c in cands]
            top1 = fitness.evaluate(cands)
            for g, t, m in zip(genes, top1, macs):
                records[g] = (float(t), m)
            out['F'] = np.array([[100.0 - t, m / 1e6] for t, m in zip(top1, macs)])
            if max_macs:
                out['G'] = np.array([[(m - max_macs) / max_macs] for m in macs])

    crossover, mutation, repair = _pymoo_ops(space, lambda g: g)
    algorithm = NSGA2(pop_size=cfg.population, sampling=IntegerRandomSampling(), crossover=crossover,
                      mutation=mutation, repair=repair, eliminate_duplicates=True)
    bar = tqdm(total=cfg.generations, desc='NSGA-II', disable=not progress, leave=False)

    def on_gen(gen, alg):
        bar.update(1)
        state.record({'phase': 'nsga2', 'generation': gen, 'evaluated': len(records)})

    _run_pymoo(algorithm, LayerProblem(), cfg.generations, _int_seed(cfg.seed, 'nsga2'), on_gen)
    bar.close()
    pts = [(g, t, m) for g, (t, m) in records.items()]
    front = [p for p in pts if not any((q[1] >= p[1] and q[2] <= p[2]) and (q[1] > p[1] or q[2] < p[2]) for q in pts)]
    front.sort(key=lambda p: p[2])
    ok = [p for p in pts if max_macs is None or p[2] <= max_macs]
    if not ok:
        raise InfeasibleError(f'max MACs {max_macs:,}: no evaluated candidate fits; raise --max-macs or search longer')
    g, t, m = max(ok, key=lambda p: (p[1], -p[2]))
    return NSGAResult(space.genes_to_candidate(g), t, m,
                      [{'genes': list(p[0]), 'top1': p[1], 'macs': p[2]} for p in front],
                      [{'macs': p[2], 'top1': p[1]} for p in pts])
