"""The `labkit` command: the main job and the commands that rebuild shipped data.

labkit run --preset tiny --out runs/tiny    the whole pipeline, report and metrics.json
labkit ppo --reward toxicity:binary --out runs/ppo   PPO alone; on several processes with
    accelerate launch --multi_gpu --num_processes 2 -m labkit.cli ppo ...   (see labkit.parallel)
labkit prepare                              run every chapter headless, in order: what a workshop needs is built
labkit pretrain                             retrain the tiny model under data/tiny-model
labkit rankings [--preset smol]             regenerate a preset's shipped rankings dataset
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _run(args: argparse.Namespace) -> int:
    from labkit import run

    stages = tuple(args.stages.split(",")) if args.stages is not None else None
    result = run.run(args.preset, args.out, stages=stages, seed=args.seed)
    print(run.summary(result))
    return 0


def _ppo(args: argparse.Namespace) -> int:
    """PPO alone on the preset's training prompts; every process of `accelerate launch` runs this."""
    from labkit import config, models, parallel, ppo, presets, rewards, worlds

    accelerator = parallel.make_accelerator()
    preset = presets.load(args.preset)
    world = worlds.load(preset)
    preference = None
    if "preference" in args.reward:
        if args.reward_model is None:
            raise ValueError(
                "--reward preference needs --reward-model FOLDER: the reward model a run saved "
                "(e.g. runs/tiny/reward_model, written by `labkit run --stages generate,labels,pairs,reward`)"
            )
        from labkit.reward_model import PreferenceReward

        preference = PreferenceReward(args.reward_model, device=str(accelerator.device))
    reward = rewards.make_reward(args.reward, world=world, preference=preference)
    overrides = config.parse_settings(args.set)
    overrides.setdefault("mixed_precision", accelerator.mixed_precision)
    if args.steps is not None:
        overrides["total_steps"] = args.steps
    cfg = ppo.preset_config(
        preset, seed=args.seed if args.seed is not None else preset.seed, output_dir=args.out, **overrides
    )
    policy, tokenizer = models.load_policy(preset)
    prompts = [q.text for q in world.prompts("train")]
    if accelerator.is_main_process:
        print(
            f"PPO on {accelerator.num_processes} process(es), {accelerator.device}: {cfg.total_steps} steps of "
            f"{cfg.batch_size} replies against {args.reward!r} -> {args.out}",
            flush=True,
        )
    _, metrics = ppo.ppo_stage(policy, tokenizer, prompts, reward, cfg, accelerator=accelerator)
    if accelerator.is_main_process:
        print(json.dumps(metrics, indent=1))
    if accelerator.num_processes == 1:
        accelerator.end_training()
        return 0
    # Every file is written and every line printed. Tearing gloo's connections down can abort the process
    # whose peer closed first (pytorch/gloo#155, "barrier followed by context destruction"; CI saw a finished
    # run exit with SIGABRT once): after one last barrier, each process leaves at once, without teardown.
    accelerator.wait_for_everyone()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _prepare(args: argparse.Namespace) -> int:
    """Run the chapters headless, in order, in the chapters' folder: each later chapter then loads the reward
    model and policies an earlier one trained, instead of training them in class. Offline, like everything;
    the notebooks themselves are not changed. Writes `prepare.json` (seconds per chapter) in that folder."""
    import time

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from labkit import artifacts, presets

    folder = Path(args.notebooks) if args.notebooks else presets.ROOT / "notebooks"
    chapters = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if args.chapters:
        unknown = sorted(set(args.chapters) - {p.name[:2] for p in chapters})
        if unknown:
            raise ValueError(
                f"no chapter {', '.join(unknown)} in {folder}: the chapters are {[p.name[:2] for p in chapters]}"
            )
        chapters = [p for p in chapters if p.name[:2] in args.chapters]
    if not chapters:
        raise FileNotFoundError(f"no chapters (NN_name.ipynb) in {folder}")
    if args.workdir:
        os.environ["LABKIT_WORKDIR"] = str(Path(args.workdir).resolve())
    if args.preset:
        os.environ["LAB_PRESET"] = args.preset
    os.environ["MPLBACKEND"] = "Agg"  # the kernels draw their figures without a screen
    presets.workdir()  # the chapters' folder exists before the first chapter writes to it
    seconds: dict[str, float] = {}
    for path in chapters:
        start = time.perf_counter()
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(notebook, timeout=None, kernel_name="python3")
        try:
            client.execute(cwd=str(path.parent))
        except CellExecutionError as err:
            done = f"; {', '.join(seconds)} done" if seconds else ""
            raise ValueError(
                f"{path.name} failed{done}. Rerun from it with --chapters {path.name[:2]} ... once fixed:\n{err}"
            ) from err
        seconds[path.stem] = round(time.perf_counter() - start, 1)
        print(f"{path.stem}: {seconds[path.stem]:.0f} s", flush=True)
    out = presets.workdir() / "prepare.json"
    artifacts.write_json(
        out,
        {
            **artifacts.provenance("labkit prepare", sys.argv[2:] if len(sys.argv) > 2 else []),
            "preset": os.environ.get("LAB_PRESET") or presets.default_name(),
            "seconds": seconds,
        },
    )
    print(
        f"ready: {len(seconds)} chapter(s) in {sum(seconds.values()):.0f} s; artifacts and {out.name} in {out.parent}"
    )
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
    from labkit import models, presets, shipped, worlds

    preset = presets.by_name(args.preset)
    model, tokenizer = (None, None) if preset.policy == "tiny" else models.load_policy(preset)
    path = shipped.build_rankings(
        out=args.out,
        cfg=shipped.preset_config(preset, seed=args.seed),
        model=model,
        tokenizer=tokenizer,
        world=worlds.load(preset),
    )
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

    p = sub.add_parser("ppo", help="PPO alone, in one process or under accelerate launch")
    p.add_argument("--preset", default=None, help="tiny, smol or hub:<id-or-path> (default: $LAB_PRESET or by device)")
    p.add_argument("--reward", default="toxicity:binary", help="reward spec, e.g. toxicity:binary or preference")
    p.add_argument("--reward-model", default=None, help="folder of a saved preference reward model")
    p.add_argument("--out", required=True, help="output folder: metrics.jsonl, checkpoint/, policy/")
    p.add_argument("--steps", type=int, default=None, help="total PPO steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="PPOConfig fields, e.g. batch_size=16")
    p.set_defaults(func=_ppo)

    p = sub.add_parser("prepare", help="run the chapters headless so a class finds every artifact built")
    p.add_argument("--preset", default=None, help="tiny, smol or hub:<id-or-path> (default: $LAB_PRESET or by device)")
    p.add_argument("--chapters", nargs="*", default=None, metavar="NN", help="only these chapters, e.g. 03 04")
    p.add_argument("--workdir", default=None, help="the chapters' folder (default: $LABKIT_WORKDIR or runs/chapters)")
    p.add_argument("--notebooks", default=None, help=argparse.SUPPRESS)  # the tests run their own notebook
    p.set_defaults(func=_prepare)

    p = sub.add_parser("pretrain", help="train the tiny model on the assistant world")
    p.add_argument("--out", default=None, help="output folder (default data/tiny-model)")
    # No flag given: PretrainConfig's defaults, the config data/tiny-model/model_card.json records.
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: PretrainConfig.steps)")
    p.add_argument(
        "--dialogues", type=int, default=None, help="corpus size in dialogues (default: PretrainConfig.num_dialogues)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed (default: PretrainConfig.seed)")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("rankings", help="regenerate a preset's shipped rankings dataset, with its labels settings")
    p.add_argument("--preset", default="tiny", help="tiny (data/rankings, the default) or smol (data/rtp_rankings)")
    p.add_argument("--out", default=None, help="output folder (default: the preset's world's shipped folder)")
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
