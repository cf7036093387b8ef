"""``python -m hub``: export, push, pull and publish scalenet-models weights on the Hugging Face Hub."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import HubError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not a positive integer')
    return value


def _cmd_export(args) -> int:
    from .export import export_model
    from .source import load_source

    metrics = None
    if args.metrics:
        try:
            metrics = json.loads(args.metrics)
        except json.JSONDecodeError as e:
            raise HubError(f'--metrics: not a JSON object ({e}), e.g. \'{{"top1": 71.2, "top5": 90.1}}\'') from None
    src = load_source(args.run, model=args.model, num_classes=args.num_classes, img_size=args.img_size,
                      ema=args.ema, family=args.family, dataset=args.dataset or '', metrics=metrics)
    result = export_model(src, args.out, repo_id=args.repo_id, overwrite=args.overwrite)
    print(f'exported {result.model_name} ({result.num_classes} classes, {result.macs / 1e6:.1f} M MACs, '
          f'{result.params / 1e6:.3f} M params) to {result.folder}')
    print(f'verified: timm.create_model("local-dir:{result.folder}", pretrained=True) gives the same logits')
    print(f'model.safetensors sha256 {result.sha256}')
    if src.family_path is not None:
        print(f'a searched family: scalenet_models.register_family("{result.folder / "family.json"}") before loading')
    return 0


def _cmd_push(args) -> int:
    from .push import plan_push, push_folder

    plan = plan_push(args.folder, args.repo_id, revision=args.revision, private=args.private,
                     commit_message=args.message)
    print(plan.describe())
    if args.dry_run:
        print('dry run: nothing was sent')
        return 0
    print(f'pushed: {push_folder(plan)}')
    return 0


def _cmd_pull(args) -> int:
    from .pull import check_against_manifest, pull, usage_text
    import scalenet_models

    snapshot = pull(args.repo_id, revision=args.revision, cache_dir=args.cache_dir)
    for line in check_against_manifest(args.repo_id, snapshot):
        print(line)
    tags = [e.tag for e in scalenet_models.weights_entries() if e.hf_hub_id == args.repo_id]
    print(usage_text(args.repo_id, snapshot, args.cache_dir, tags))
    return 0


def _cmd_publish_family(args) -> int:
    from .family import parse_runs, publish_family
    from scalenet_models.weights import manifest_path

    published = publish_family(
        org=args.org, tag=args.tag, out=args.out, runs=parse_runs(args.run or []), family_dir=args.family_dir,
        family=args.family, members=args.members.split(',') if args.members else None, dataset=args.dataset or '',
        ema=args.ema, manifest=args.manifest, private=args.private, dry_run=args.dry_run, overwrite=args.overwrite)
    manifest = args.manifest or manifest_path()
    for p in published:
        print(f'== {p.tag}: exported to {p.export.folder} (sha256 {p.export.sha256[:12]}...)')
        print(p.plan)
        print(f'pushed: {p.url}' if p.url else 'dry run: nothing was sent')
    if args.dry_run:
        print(f'dry run: {manifest} left unchanged; it would get: {", ".join(p.tag for p in published)}')
    else:
        print(f'weights manifest {manifest} now lists: {", ".join(p.tag for p in published)}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m hub', description=__doc__.split(':', 1)[1].strip())
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    p = sub.add_parser('export', help='write a verified folder (config.json, model.safetensors, README.md card)',
                       description='Export weights to a folder that timm.create_model("local-dir:DIR", '
                                   'pretrained=True) loads; verified against the source before it is placed.')
    p.add_argument('--run', required=True, type=Path,
                   help='a recipe run directory (config.yaml, model.safetensors, metrics.json) or a .safetensors file')
    p.add_argument('--model', help='model name (read from the run\'s config.yaml; required for a bare file)')
    p.add_argument('--out', required=True, type=Path, help='folder to create (must not exist unless --overwrite)')
    p.add_argument('--family', type=Path, help='family JSON of a searched family, registered before loading')
    p.add_argument('--num-classes', type=_positive,
                   help='classes of a bare file (default: rows of its classifier); checked against a run')
    p.add_argument('--img-size', type=_positive, help='resolution in the card and config (default: the run\'s '
                                                      'img_size, else the member\'s resolution)')
    p.add_argument('--ema', action='store_true', help='export the run\'s EMA weights (model_ema.safetensors)')
    p.add_argument('--dataset', help='data set name shown in the card (default: what the run recorded; for a bare '
                                     'file: none)')
    p.add_argument('--metrics', help='JSON object of metrics for a bare file, e.g. \'{"top1": 71.2}\' (default: '
                                     'the member\'s metrics in the family JSON)')
    p.add_argument('--repo-id', help='the org/name the card\'s usage snippet shows (default: your-org/<out name>)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --out folder')
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser('push', help='upload an export folder to a Hub model repository in one commit',
                       description='Create the repository if needed and upload the folder in one commit. The '
                                   'token comes from huggingface_hub (HF_TOKEN or `hf auth login`).')
    p.add_argument('folder', type=Path, help='a folder written by `python -m hub export`')
    p.add_argument('--repo-id', required=True, help='target repository, "org/name"')
    p.add_argument('--private', action='store_true', help='create the repository as private')
    p.add_argument('--revision', help='branch to commit to (created from main if missing; default: main)')
    p.add_argument('--message', help='commit message (default: names the architecture and classes)')
    p.add_argument('--dry-run', action='store_true', help='print the files and the commit, contact nothing')
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser('pull', help='download a repository into the HF cache for offline use',
                       description='Fill the Hugging Face cache (snapshot_download) and print how to load the '
                                   'model offline; checks the weights against the weights manifest when it lists '
                                   'the repository.')
    p.add_argument('repo_id', help='repository, "org/name"')
    p.add_argument('--revision', help='branch, tag or commit (default: main)')
    p.add_argument('--cache-dir', type=Path, help='cache folder (default: HF_HUB_CACHE or ~/.cache/huggingface/hub)')
    p.set_defaults(func=_cmd_pull)

    p = sub.add_parser('publish-family', help='export and push every member of a family, update the weights manifest',
                       description='Export (verified) and push each member as ORG/<member>.<TAG>, then record '
                                   'hf_hub_id, sha256 and metrics in the weights manifest so that '
                                   'timm.create_model(member, pretrained=True) downloads them.')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--run', action='append', metavar='MEMBER=RUN_DIR',
                     help='a recipe run per member (repeat the option for each member)')
    src.add_argument('--family-dir', type=Path,
                     help='a searched family directory (family.json + weights/<member>.safetensors)')
    p.add_argument('--org', required=True, help='Hub user or organisation that receives the repositories')
    p.add_argument('--tag', required=True, help='pretrained tag, e.g. cifar10 or in1k: repos are ORG/<member>.<tag>')
    p.add_argument('--out', type=Path, default=Path('hub-export'),
                   help='where the export folders are written (default: ./hub-export)')
    p.add_argument('--family', type=Path, help='family JSON of a searched family trained by the --run recipes')
    p.add_argument('--members', help='comma-separated subset of members (--family-dir only; default: all)')
    p.add_argument('--dataset', help='data set of the inherited weights (--family-dir)')
    p.add_argument('--ema', action='store_true', help='publish the runs\' EMA weights')
    p.add_argument('--manifest', type=Path, help='weights manifest to update (default: $SCALENET_WEIGHTS_MANIFEST '
                                                 'or the packaged scalenet_models/weights.json)')
    p.add_argument('--private', action='store_true', help='create the repositories as private')
    p.add_argument('--dry-run', action='store_true', help='export and print the commits; push nothing and leave '
                                                          'the manifest unchanged')
    p.add_argument('--overwrite', action='store_true', help='replace existing export folders')
    p.set_defaults(func=_cmd_publish_family)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HubError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    raise SystemExit(main())
