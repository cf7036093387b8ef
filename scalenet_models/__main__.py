"""``python -m scalenet_models``: print the zoo (name, resolution, MACs, params, published weights)."""
from __future__ import annotations

import argparse
import json

import scalenet_models
from scalenet_models.complexity import complexity
from scalenet_models.registry import get_family, member_net, weights_entries


def zoo_rows(family: str | None = None) -> list[dict]:
    rows = []
    for name in scalenet_models.ZOO if family is None else [m.name for m in get_family(family).members]:
        net, member = member_net(name)
        c = complexity(net, member.resolution)
        weights = [e.tag for e in weights_entries(name)]
        rows.append(dict(model=name, family=get_family(name).name, resolution=member.resolution,
                         macs=c.macs, params=c.params, weights=weights,
                         reconstruction='reconstruction' in member.notes.lower()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m scalenet_models', description=__doc__.split(':', 1)[1].strip())
    parser.add_argument('--family', help='only this family, by family or member name (default: the whole zoo)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    args = parser.parse_args(argv)
    try:
        rows = zoo_rows(args.family)
    except KeyError as e:
        parser.error(e.args[0])
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f'{"model":<14}{"res":>5}{"MACs":>10}{"params":>10}  weights')
    for r in rows:
        weights = ', '.join(r['weights']) or 'none published'
        note = ' (reconstruction)' if r['reconstruction'] else ''
        print(f'{r["model"]:<14}{r["resolution"]:>5}{r["macs"] / 1e9:>9.3f}G{r["params"] / 1e6:>9.3f}M  {weights}{note}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
