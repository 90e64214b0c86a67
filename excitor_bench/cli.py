"""Command-line entry points that the workflow's rules call; each also works by hand.

    excitor-bench world        --settings JSON --out DIR
    excitor-bench tokenizer    --files F [F ...] --vocab-size N --out DIR
    excitor-bench pretrain     --model-settings JSON --train-settings JSON --corpus F [F ...] --tokenizer DIR --out DIR
    excitor-bench train        --spec JSON --out DIR
    excitor-bench evaluate     {mmlu,instructions} --base-model PATH [--run DIR] --data PATH --out FILE
    excitor-bench scenes       --settings JSON --out DIR
    excitor-bench clip         --settings JSON --captions JSON --images DIR --out DIR
    excitor-bench train-visual --spec JSON --out DIR
    excitor-bench evaluate     {captions,scienceqa} --base-model PATH [--run DIR --vision-model PATH]
                               --data PATH [--images DIR] --out FILE
    excitor-bench caption-floor --data JSON --images DIR --out FILE
    excitor-bench aggregate    --evaluations FILE [FILE ...] --runs-csv F --table-csv F [--plot PNG]
                               [--visual-plot PNG]
    excitor-bench plot         --runs-csv F --out PNG
    excitor-bench benchmark    [--config YAML] [--model DIR] [--out JSON]
    excitor-bench grid         [--config YAML]

JSON arguments take either inline JSON or the path of a JSON or YAML file. A mistake in the input
(config, data, arguments) prints one line starting with "error:" and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from excitor_bench.errors import UserError

log = logging.getLogger("excitor_bench")

VISUAL_EVALUATIONS = ("captions", "scienceqa")


def parse_json_argument(value: str) -> Any:
    """Read an argument that is inline JSON or the path of a JSON or YAML file."""
    path = Path(value)
    if not value.lstrip().startswith(("{", "[")) and path.is_file():
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise UserError(f"argument {value[:60]!r} is neither a file nor valid JSON ({error})") from None


def command_world(args: argparse.Namespace) -> None:
    from excitor_bench.world import build_world

    summary = build_world(parse_json_argument(args.settings), Path(args.out))
    log.info("world written to %s: %s", args.out, summary)


def command_tokenizer(args: argparse.Namespace) -> None:
    from excitor_bench.tokenizer import train_tokenizer

    train_tokenizer([Path(f) for f in args.files], args.vocab_size, Path(args.out))


def command_pretrain(args: argparse.Namespace) -> None:
    from excitor_bench.pretrain import pretrain

    stats = pretrain(parse_json_argument(args.model_settings), parse_json_argument(args.train_settings),
                     [Path(f) for f in args.corpus], Path(args.tokenizer), Path(args.out))
    log.info("pretraining finished: %s", stats)


def command_train(args: argparse.Namespace) -> None:
    from excitor_bench.train import train, write_spec

    out = Path(args.out)
    spec = parse_json_argument(args.spec)
    write_spec(spec, out)
    train(spec, out)


def load_model_for_evaluation(args: argparse.Namespace):
    from excitor_bench.models import load_base_model, load_tuned_model, resolve_device, resolve_dtype

    settings = parse_json_argument(args.settings) if args.settings else {}
    device = resolve_device(settings.pop("device", "auto"))
    dtype = resolve_dtype(settings.pop("dtype", "auto"), device)
    if args.run:
        model, tokenizer = load_tuned_model(Path(args.run), args.base_model, device=device, dtype=dtype)
    else:
        model, tokenizer = load_base_model(args.base_model, device=device, dtype=dtype)
    return model, tokenizer, settings


def write_result(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


def command_evaluate(args: argparse.Namespace) -> None:
    if args.evaluation in VISUAL_EVALUATIONS:
        return command_evaluate_visual(args)
    model, tokenizer, settings = load_model_for_evaluation(args)
    if args.evaluation == "mmlu":
        from excitor_bench.evaluate.mmlu import evaluate_mmlu

        result = evaluate_mmlu(model, tokenizer, Path(args.data), **settings)
    else:
        from excitor_bench.evaluate.instructions import evaluate_instructions

        result = evaluate_instructions(model, tokenizer, Path(args.data), **settings)
    write_result({"evaluation": args.evaluation, "run": args.run or "base", **result}, Path(args.out))


def command_evaluate_visual(args: argparse.Namespace) -> None:
    from excitor_bench.models import load_base_model, resolve_device, resolve_dtype
    from excitor_bench.visual import evaluate_captions, evaluate_scienceqa, load_visual_run

    settings = parse_json_argument(args.settings) if args.settings else {}
    device = resolve_device(settings.pop("device", "auto"))
    dtype = resolve_dtype(settings.pop("dtype", "auto"), device)
    if args.run:
        if not args.vision_model:
            raise UserError("evaluating a visual run needs --vision-model, the CLIP folder or hub id it was trained with")
        model, tokenizer, processor = load_visual_run(Path(args.run), args.base_model, args.vision_model,
                                                      device=device, dtype=dtype)
    else:
        # The untuned base model has no vision input: it answers from the text alone.
        model, tokenizer = load_base_model(args.base_model, device=device, dtype=dtype)
        processor = None
    if args.evaluation == "captions":
        if not args.images:
            raise UserError("evaluate captions needs --images, the folder that holds the Karpathy file's image folders")
        result = evaluate_captions(model, tokenizer, processor, Path(args.data), Path(args.images), **settings)
    else:
        result = evaluate_scienceqa(model, tokenizer, processor, Path(args.data), **settings)
    write_result({"evaluation": args.evaluation, "run": args.run or "base", **result}, Path(args.out))


def command_caption_floor(args: argparse.Namespace) -> None:
    from excitor_bench.visual import evaluate_most_common_caption

    settings = parse_json_argument(args.settings) if args.settings else {}
    result = evaluate_most_common_caption(Path(args.data), Path(args.images), **settings)
    write_result({"evaluation": "captions", "run": "most_common_caption", **result}, Path(args.out))


def command_scenes(args: argparse.Namespace) -> None:
    from excitor_bench.world.scenes import build_scenes

    summary = build_scenes(parse_json_argument(args.settings), Path(args.out))
    log.info("scenes written to %s: %s", args.out, summary)


def command_clip(args: argparse.Namespace) -> None:
    from excitor_bench.vision.clip import retrieval_scores, train_clip
    from excitor_bench.vision.coco import TRAIN_SPLITS, load_karpathy
    from excitor_bench.vision.images import load_image

    def captioned(splits):
        records = load_karpathy(Path(args.captions), Path(args.images), splits=splits)
        return [(load_image(r.path, f"COCO image {r.image_id}"), r.captions) for r in records]

    training = captioned(TRAIN_SPLITS)
    out = Path(args.out)
    figures = train_clip([(image, caption) for image, captions in training for caption in captions],
                         parse_json_argument(args.settings), out)
    retrieval = retrieval_scores(out, captioned(["test"]))
    write_result({"training": figures, "retrieval": retrieval}, out / "retrieval.json")
    log.info("tiny CLIP retrieval on the test images: %s", retrieval)


def command_train_visual(args: argparse.Namespace) -> None:
    from excitor_bench.train import write_spec
    from excitor_bench.visual import train_visual

    out = Path(args.out)
    spec = parse_json_argument(args.spec)
    write_spec(spec, out)
    train_visual(spec, out)


def command_aggregate(args: argparse.Namespace) -> None:
    from excitor_bench.aggregate import aggregate

    aggregate([Path(f) for f in args.evaluations], Path(args.runs_csv), Path(args.table_csv))
    if args.plot:
        from excitor_bench.plots import plot_knowledge_vs_instructions

        plot_knowledge_vs_instructions(Path(args.runs_csv), Path(args.plot))
    if args.visual_plot:
        from excitor_bench.plots import plot_visual_scores

        plot_visual_scores(Path(args.runs_csv), Path(args.visual_plot))


def command_plot(args: argparse.Namespace) -> None:
    from excitor_bench.plots import plot_knowledge_vs_instructions

    plot_knowledge_vs_instructions(Path(args.runs_csv), Path(args.out))


def command_benchmark(args: argparse.Namespace) -> None:
    from excitor_bench.benchmark import run_benchmark, write_benchmark

    from excitor_bench.config import load_config

    config = load_config(args.config)
    result = run_benchmark(args.model or config["base_model"].get("path"), config["base_model"], rounds=args.rounds)
    write_benchmark(result, Path(args.out))


def command_grid(args: argparse.Namespace) -> None:
    from excitor_bench.config import load_config
    from excitor_bench.grid import expand_grid

    config = load_config(args.config)
    for setting in expand_grid(config, args.config):
        print(f"{setting.method}\t{setting.setting_id}\t{json.dumps(setting.hyperparameters, sort_keys=True)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="excitor-bench", description=__doc__.split("\n", 1)[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0: torch's default, all cores)")
    commands = parser.add_subparsers(dest="command", required=True)

    world = commands.add_parser("world", help="generate the tiny world's data sets")
    world.add_argument("--settings", required=True, help="the config's world section (JSON or file)")
    world.add_argument("--out", required=True, help="output folder")
    world.set_defaults(handler=command_world)

    tokenizer = commands.add_parser("tokenizer", help="train a byte-level BPE tokenizer")
    tokenizer.add_argument("--files", nargs="+", required=True, help="text or JSON files to learn from")
    tokenizer.add_argument("--vocab-size", type=int, required=True, help="vocabulary size, special tokens included")
    tokenizer.add_argument("--out", required=True, help="output folder (save_pretrained layout)")
    tokenizer.set_defaults(handler=command_tokenizer)

    pretrain = commands.add_parser("pretrain", help="pretrain the tiny LLaMA on the world's corpus")
    pretrain.add_argument("--model-settings", required=True, help="the config's base_model section")
    pretrain.add_argument("--train-settings", required=True, help="the config's pretrain section")
    pretrain.add_argument("--corpus", nargs="+", required=True,
                          help="corpus text files, documents separated by two blank lines")
    pretrain.add_argument("--tokenizer", required=True, help="the tokenizer folder")
    pretrain.add_argument("--out", required=True, help="output folder (save_pretrained layout)")
    pretrain.set_defaults(handler=command_pretrain)

    train = commands.add_parser("train", help="tune one run: a method, a setting and a seed")
    train.add_argument("--spec", required=True, help="the run's spec (JSON or file); see excitor_bench.train.train")
    train.add_argument("--out", required=True, help="run folder: spec.json, train.json and adapter/ go here")
    train.set_defaults(handler=command_train)

    evaluate = commands.add_parser("evaluate", help="evaluate the base model or a tuned run")
    evaluate.add_argument("evaluation", choices=["mmlu", "instructions", *VISUAL_EVALUATIONS])
    evaluate.add_argument("--base-model", required=True, help="base model folder or hub id")
    evaluate.add_argument("--run", help="run folder of a tuned model; omit to evaluate the base model")
    evaluate.add_argument("--data", required=True,
                          help="MMLU folder (Hendrycks layout), instruction test JSON, Karpathy caption JSON "
                               "or ScienceQA folder (problems.json, pid_splits.json, images/)")
    evaluate.add_argument("--images", help="captions: the folder that holds the Karpathy file's image folders")
    evaluate.add_argument("--vision-model", help="visual runs: the CLIP folder or hub id they were trained with")
    evaluate.add_argument("--settings", help="evaluation settings (JSON or file), e.g. batch_size, limit")
    evaluate.add_argument("--out", required=True, help="result JSON file")
    evaluate.set_defaults(handler=command_evaluate)

    floor = commands.add_parser("caption-floor", help="score the most common training caption on the test images")
    floor.add_argument("--data", required=True, help="Karpathy caption JSON")
    floor.add_argument("--images", required=True, help="the folder that holds the Karpathy file's image folders")
    floor.add_argument("--settings", help="settings (JSON or file): split, limit")
    floor.add_argument("--out", required=True, help="result JSON file")
    floor.set_defaults(handler=command_caption_floor)

    scenes = commands.add_parser("scenes", help="generate the tiny world's scenes, captions and ScienceQA problems")
    scenes.add_argument("--settings", required=True, help="the config's visual.scenes section (JSON or file)")
    scenes.add_argument("--out", required=True, help="output folder")
    scenes.set_defaults(handler=command_scenes)

    clip = commands.add_parser("clip", help="train the tiny CLIP on the training captions and score its retrieval")
    clip.add_argument("--settings", required=True, help="the config's visual.clip section (JSON or file)")
    clip.add_argument("--captions", required=True, help="Karpathy caption JSON")
    clip.add_argument("--images", required=True, help="the folder that holds the Karpathy file's image folders")
    clip.add_argument("--out", required=True, help="output folder: a CLIP folder plus retrieval.json")
    clip.set_defaults(handler=command_clip)

    train_visual = commands.add_parser("train-visual", help="tune one visual run: a method, a setting and a seed")
    train_visual.add_argument("--spec", required=True, help="the run's spec; see excitor_bench.visual.train_visual")
    train_visual.add_argument("--out", required=True, help="run folder: spec.json, train.json and adapter/ go here")
    train_visual.set_defaults(handler=command_train_visual)

    aggregate = commands.add_parser("aggregate", help="collect evaluations into runs.csv and table.csv")
    aggregate.add_argument("--evaluations", nargs="+", required=True, help="evaluation JSON files")
    aggregate.add_argument("--runs-csv", required=True, help="output: one row per run")
    aggregate.add_argument("--table-csv", required=True, help="output: mean and spread per method and setting")
    aggregate.add_argument("--plot", help="also draw the knowledge-against-instructions plot to this file")
    aggregate.add_argument("--visual-plot", help="also draw the CIDEr and ScienceQA bars to this file")
    aggregate.set_defaults(handler=command_aggregate)

    plot = commands.add_parser("plot", help="plot knowledge retained against instruction following")
    plot.add_argument("--runs-csv", required=True, help="runs.csv written by aggregate")
    plot.add_argument("--out", required=True, help="output image (PNG, PDF or SVG)")
    plot.set_defaults(handler=command_plot)

    benchmark = commands.add_parser("benchmark", help="time Excitor against LoRA and the base model")
    benchmark.add_argument("--config", default=None,
                           help="config YAML whose base_model is measured, merged over config/config.yaml")
    benchmark.add_argument("--model", help="a saved model folder; default: base_model.path, else a random model "
                                           "of the config's base_model sizes")
    benchmark.add_argument("--rounds", type=int, default=21, help="interleaved timing rounds (median is kept)")
    benchmark.add_argument("--out", default="results/benchmark.json", help="output JSON file")
    benchmark.set_defaults(handler=command_benchmark)

    grid = commands.add_parser("grid", help="list the (method, setting) pairs a config expands to")
    grid.add_argument("--config", default=None,
                      help="config YAML, merged over config/config.yaml as --configfile is (default: that file)")
    grid.set_defaults(handler=command_grid)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
