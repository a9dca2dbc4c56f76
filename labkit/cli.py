"""The `labkit` command: the main job and the commands that rebuild shipped data.

labkit run --preset tiny --out runs/tiny    the whole pipeline, report and metrics.json
labkit pretrain                             retrain the tiny model under data/tiny-model
labkit rankings                             regenerate the shipped rankings dataset
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def _run(args: argparse.Namespace) -> int:
    from labkit import run

    stages = tuple(args.stages.split(",")) if args.stages is not None else None
    result = run.run(args.preset, args.out, stages=stages, seed=args.seed)
    print(run.summary(result))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from labkit import pretrain

    overrides = {
        k: v
        for k, v in (("steps", args.steps), ("num_dialogues", args.dialogues), ("seed", args.seed))
        if v is not None
    }
    cfg = pretrain.PretrainConfig(**overrides)
    card = pretrain.pretrain(cfg, out_dir=args.out)
    q = card.get("quality", {})
    print(
        f"tiny model: {card['parameters']:,} parameters, {card['size_mb']} MB, "
        f"{card['train_seconds']:.0f} s; recognised {q.get('recognised_share', float('nan')):.1%}, "
        f"rude {q.get('rude_share', float('nan')):.1%}, distinct-2 {q.get('distinct_2', float('nan')):.3f}"
    )
    return 0


def _rankings(args: argparse.Namespace) -> int:
    from labkit import shipped

    path = shipped.build_rankings(out=args.out, cfg=shipped.RankingsConfig(seed=args.seed))
    print(f"wrote {path}:")
    print((path / "README.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(
        prog="labkit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the lab's pipeline and write a report")
    p.add_argument("--preset", default=None, help="tiny, smol or hub:<id-or-path> (default: $LAB_PRESET or by device)")
    p.add_argument("--out", default=None, help="output folder (default runs/<preset>)")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run, in order")
    p.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    p.set_defaults(func=_run)

    p = sub.add_parser("pretrain", help="train the tiny model on the assistant world")
    p.add_argument("--out", default=None, help="output folder (default data/tiny-model)")
    # No flag given: PretrainConfig's defaults, the config data/tiny-model/model_card.json records.
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: PretrainConfig.steps)")
    p.add_argument(
        "--dialogues", type=int, default=None, help="corpus size in dialogues (default: PretrainConfig.num_dialogues)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed (default: PretrainConfig.seed)")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("rankings", help="regenerate the shipped rankings dataset for the tiny preset")
    p.add_argument("--out", default=None, help="output folder (default data/rankings)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_rankings)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError, OSError) as err:
        print(f"labkit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
