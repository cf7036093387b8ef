"""What a search leaves behind: DIR/family.json, inherited weights, DIR/report.md and PNG plots.

Everything is written atomically (temp file + rename), so an interrupted search never leaves a half
file that the zoo or the hub would read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from scalenet_models.atomic import atomic_path, write_text_atomic
from scalenet_models.complexity import complexity
from scalenet_models.spec import FamilySpec, save_family


_atomic_text = write_text_atomic


def _atomic_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches='tight')


def member_rows(family: FamilySpec, top1: Sequence[float | None], macs_classes: int = 1000) -> list[dict]:
    """One row per member: multipliers, resolution, depths, MACs and params (at ``macs_classes``), top-1."""
    rows = []
    for m, t in zip(family.members, top1):
        net = family.member_net(m.name)
        c = complexity(net, m.resolution, macs_classes)
        rows.append({'member': m.name, 'depth': m.depth, 'width': m.width, 'resolution': m.resolution,
                     'depths': list(net.depths), 'macs': c.macs, 'params': c.params, 'top1': t})
    return rows


def format_table(rows: list[dict], macs_classes: int = 1000) -> str:
    """The family as a markdown table (also what the CLI prints); MACs and params count a
    ``macs_classes``-way classifier, as the FLOPs targets do."""
    head = f'{macs_classes}-class head'
    lines = [f'| member | d | w | resolution | depth per stage | MACs ({head}) | params ({head}) | supernet top-1 |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        top1 = f'{r["top1"]:.2f}%' if r['top1'] is not None else 'extrapolated'
        lines.append(f'| {r["member"]} | {r["depth"]:.3g} | {r["width"]:.3g} | {r["resolution"]} | '
                     f'{",".join(map(str, r["depths"]))} | {_si(r["macs"])} | {_si(r["params"])} | {top1} |')
    return '\n'.join(lines)


def _si(n: float) -> str:
    for unit, div in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if n >= div:
            return f'{n / div:.3f}{unit}'
    return str(int(n))


def plot_top1_vs_macs(rows: list[dict], evaluated: list[dict], path: Path, title: str) -> None:
    """Every evaluated candidate (grey, or coloured by scaling stage) and the family's members."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    stages = sorted({e.get('stage') for e in evaluated if e.get('stage') is not None})
    cmap = plt.get_cmap('viridis', max(1, len(stages)))
    if stages:
        for i, s in enumerate(stages):
            pts = [e for e in evaluated if e.get('stage') == s]
            ax.scatter([e['macs'] / 1e6 for e in pts], [e['top1'] for e in pts], s=10, alpha=0.45,
                       color=cmap(i), label=f'evaluated, scaling stage {s}')
    else:
        ax.scatter([e['macs'] / 1e6 for e in evaluated], [e['top1'] for e in evaluated], s=10, alpha=0.45,
                   color='grey', label='evaluated candidates')
    fam = [r for r in rows if r['top1'] is not None]
    ax.plot([r['macs'] / 1e6 for r in fam], [r['top1'] for r in fam], 'o-', color='crimson', lw=2, ms=7,
            label='family members')
    for r in fam:
        ax.annotate(r['member'].rsplit('_', 1)[-1], (r['macs'] / 1e6, r['top1']), textcoords='offset points',
                    xytext=(5, -12), fontsize=9, color='crimson')
    ax.set_xscale('log')
    from matplotlib.ticker import FuncFormatter
    for axis in (ax.xaxis,):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f'{v:g}' if f'{v:.1g}'[0] in '25' else ''))
    ax.set_xlabel('MACs (millions, log scale)')
    ax.set_ylabel('held-out top-1 (%), supernet weights')
    ax.set_title(title)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8, loc='lower right')
    _atomic_png(fig, path)
    plt.close(fig)


def plot_scaling_strategy(rows: list[dict], path: Path, title: str) -> None:
    """d, w and r / r0 per member: searched stages filled, extrapolated ones hollow."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    r0 = rows[0]['resolution']
    xs = list(range(len(rows)))
    for key, label, color in (('depth', 'depth multiplier d', 'tab:blue'), ('width', 'width multiplier w', 'tab:orange'),
                              ('resolution', 'resolution multiplier r / r0', 'tab:green')):
        ys = [r[key] / (r0 if key == 'resolution' else 1) for r in rows]
        ax.plot(xs, ys, '-', color=color, label=label)
        for x, y, r in zip(xs, ys, rows):
            ax.plot([x], [y], 'o', color=color, mfc=color if r['top1'] is not None else 'white', ms=7)
    ax.set_xticks(xs, [f's{x}' + ('' if r['top1'] is not None else '\n(extrap.)') for x, r in zip(xs, rows)])
    ax.set_xlabel('member (scaling stage)')
    ax.set_ylabel('multiplier over the base')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    _atomic_png(fig, path)
    plt.close(fig)


def write_report(out: Path, family: FamilySpec, rows: list[dict], evaluated: list[dict], context: dict) -> Path:
    """``family.json``, ``report.md`` and the plots into ``out``; returns the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_family(family, out / 'family.json')
    plots = []
    if evaluated:
        plot_top1_vs_macs(rows, evaluated, out / 'top1_vs_macs.png', f'{family.name}: held-out top-1 vs MACs')
        plots.append('top1_vs_macs.png')
    if len(rows) > 1:
        plot_scaling_strategy(rows, out / 'scaling_strategy.png', f'{family.name}: scaling strategy')
        plots.append('scaling_strategy.png')
    lines = [f'# Searched family `{family.name}`', '',
             f'MACs and params at {context.get("macs_classes", 1000)} classes; top-1 is the held-out accuracy with '
             f'weights inherited from the supernet after BN recalibration (a ranking signal, not a trained '
             f'model\'s accuracy).', '', format_table(rows, context.get('macs_classes', 1000)), '']
    if any(r['top1'] is None for r in rows):
        lines += ['Extrapolated members lie beyond the trained scaling stages: each multiplier follows a '
                  'least-squares fit of log(multiplier) against the scaling stage, walked until the MACs reach '
                  '2^s x the base (see docs/search.md).', '']
    lines += ['## Search', '']
    lines += [f'- {k}: {v}' for k, v in context.items()]
    lines += ['', f'- candidates evaluated: {len(evaluated)}', '']
    for p in plots:
        lines += [f'![{p}]({p})', '']
    lines += ['## Use', '', '```python', 'import timm, scalenet_models',
              f"scalenet_models.register_family('{out / 'family.json'}')",
              f"model = timm.create_model('{family.members[-1 if len(family.members) < 3 else 2].name}')", '```', '']
    path = out / 'report.md'
    _atomic_text(path, '\n'.join(lines))
    return path


def save_member_weights(out: Path, name: str, state: dict, num_classes: int) -> Path:
    """Inherited weights of one member as ``out/weights/<name>.safetensors`` (timm keys)."""
    from scalenet_models.atomic import save_safetensors_atomic

    path = Path(out) / 'weights' / f'{name}.safetensors'
    save_safetensors_atomic(state, path, metadata={'num_classes': str(num_classes), 'source': 'supernet'})
    return path

