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
    excitor-bench scienceqa-chance --data DIR --out FILE
    excitor-bench aggregate    --evaluations FILE [FILE ...] --runs-csv F --table-csv F [--plot PNG]
                               [--visual-plot PNG] [--pareto-plot PNG] [--ablation-plot PNG]
    excitor-bench plot         [--kind KIND] (--runs-csv F | --table-csv F | --efficiency-csv F) --out PNG
    excitor-bench benchmark    [--config YAML] [--model DIR] [--methods JSON] [--settings JSON] [--rounds N]
                               [--out JSON] [--csv CSV] [--plot PNG]
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
IMAGES_HELP = "the folder that contains the Karpathy file's image folders"


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


def train_from_spec(args: argparse.Namespace, trainer) -> None:
    """Record the run's spec in its folder first, then train it, so a failed run still shows what it was."""
    from excitor_bench.train import write_spec

    out = Path(args.out)
    spec = parse_json_argument(args.spec)
    write_spec(spec, out)
    trainer(spec, out)


def command_train(args: argparse.Namespace) -> None:
    from excitor_bench.train import train

    train_from_spec(args, train)


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
        # The untuned base model has no vision input, so it is given the text alone.
        model, tokenizer = load_base_model(args.base_model, device=device, dtype=dtype)
        processor = None
    if args.evaluation == "captions":
        if not args.images:
            raise UserError(f"evaluate captions needs --images, {IMAGES_HELP}")
        result = evaluate_captions(model, tokenizer, processor, Path(args.data), Path(args.images), **settings)
    else:
        result = evaluate_scienceqa(model, tokenizer, processor, Path(args.data), **settings)
    write_result({"evaluation": args.evaluation, "run": args.run or "base", **result}, Path(args.out))


def command_caption_floor(args: argparse.Namespace) -> None:
    from excitor_bench.visual import evaluate_most_common_caption

    settings = parse_json_argument(args.settings) if args.settings else {}
    result = evaluate_most_common_caption(Path(args.data), Path(args.images), **settings)
    write_result({"evaluation": "captions", "run": "most_common_caption", **result}, Path(args.out))


def command_scienceqa_chance(args: argparse.Namespace) -> None:
    from excitor_bench.visual import evaluate_random_choice

    settings = parse_json_argument(args.settings) if args.settings else {}
    result = evaluate_random_choice(Path(args.data), **settings)
    write_result({"evaluation": "scienceqa", "run": "random_choice", **result}, Path(args.out))


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
    train_clip([(image, caption) for image, captions in training for caption in captions],
               parse_json_argument(args.settings), out)
    retrieval = retrieval_scores(out, captioned(["test"]))
    # The training figures, wall-clock time included, are in train.json; this file is the same on every rerun.
    write_result({"retrieval": retrieval}, out / "retrieval.json")
    log.info("tiny CLIP retrieval on the test images: %s", retrieval)


def command_train_visual(args: argparse.Namespace) -> None:
    from excitor_bench.visual import train_visual

    train_from_spec(args, train_visual)


def command_aggregate(args: argparse.Namespace) -> None:
    from excitor_bench.aggregate import aggregate

    def optional_path(value: str | None) -> Path | None:
        return Path(value) if value else None

    aggregate(
        [Path(f) for f in args.evaluations], Path(args.runs_csv), Path(args.table_csv),
        comparisons_csv=optional_path(args.comparisons_csv), timings_csv=optional_path(args.timings_csv),
        table_md=optional_path(args.table_md), table_tex=optional_path(args.table_tex),
        provenance_csv=optional_path(args.provenance_csv), confidence=args.confidence, resamples=args.resamples, permutations=args.permutations, seed=args.seed,
    )
    if args.plot:
        from excitor_bench.plots import plot_knowledge_vs_instructions

        plot_knowledge_vs_instructions(Path(args.runs_csv), Path(args.plot))
    if args.visual_plot:
        from excitor_bench.plots import plot_visual_scores

        plot_visual_scores(Path(args.table_csv), Path(args.visual_plot))
    if args.pareto_plot:
        from excitor_bench.plots import plot_score_vs_parameters

        plot_score_vs_parameters(Path(args.table_csv), Path(args.pareto_plot))
    if args.ablation_plot:
        from excitor_bench.plots import plot_ablation_axes

        plot_ablation_axes(Path(args.table_csv), Path(args.ablation_plot))


# Each plot kind: the input argument it reads and the function of excitor_bench.plots that draws it.
PLOT_KINDS = {
    "knowledge-vs-instructions": ("runs_csv", "plot_knowledge_vs_instructions"),
    "visual-scores": ("table_csv", "plot_visual_scores"),
    "score-vs-parameters": ("table_csv", "plot_score_vs_parameters"),
    "ablation": ("table_csv", "plot_ablation_axes"),
    "efficiency": ("efficiency_csv", "plot_efficiency"),
}


def command_plot(args: argparse.Namespace) -> None:
    from excitor_bench import plots

    source, function = PLOT_KINDS[args.kind]
    path = getattr(args, source)
    if not path:
        raise UserError(f"plot --kind {args.kind} reads --{source.replace('_', '-')}; give that file")
    if not Path(path).is_file():
        raise UserError(f"--{source.replace('_', '-')} {path} not found; run the workflow (or aggregate) first")
    getattr(plots, function)(Path(path), Path(args.out))


def command_benchmark(args: argparse.Namespace) -> None:
    from excitor_bench.benchmark import (BenchmarkSettings, default_method_settings, run_benchmark, write_benchmark,
                                         write_efficiency_csv)
    from excitor_bench.config import load_config
    from excitor_bench.grid import Setting

    if args.plot and not args.csv:
        raise UserError("benchmark --plot draws from the efficiency table; give --csv as well")
    config = load_config(args.config)
    source = args.config or "config/config.yaml"
    if args.methods:
        methods_argument = parse_json_argument(args.methods)
        entries = methods_argument.values() if isinstance(methods_argument, dict) else [None]
        if not all(isinstance(entry, dict) for entry in entries):
            raise UserError(f"--methods is {args.methods[:60]!r}; give a JSON object "
                            '{"method": {"setting": ID, "hyperparameters": {...}}}')
        methods = [Setting(name, entry.get("setting", "default"), entry.get("hyperparameters", {}))
                   for name, entry in methods_argument.items()]
    else:
        methods = default_method_settings(config, source)
    values = parse_json_argument(args.settings) if args.settings else {}
    if args.rounds is not None:
        values = {**values, "rounds": args.rounds}
    settings = BenchmarkSettings.from_dict(values, args.settings or "--rounds")

    result = run_benchmark(args.model or config["base_model"].get("path"), config["base_model"], methods, settings)
    write_benchmark(result, Path(args.out))
    if args.csv:
        write_efficiency_csv(result["efficiency"], Path(args.csv))
    if args.plot:
        from excitor_bench.plots import plot_efficiency

        plot_efficiency(Path(args.csv), Path(args.plot))


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
    evaluate.add_argument("--images", help=f"captions: {IMAGES_HELP}")
    evaluate.add_argument("--vision-model", help="visual runs: the CLIP folder or hub id they were trained with")
    evaluate.add_argument("--settings", help="evaluation settings (JSON or file), e.g. batch_size, limit")
    evaluate.add_argument("--out", required=True, help="result JSON file")
    evaluate.set_defaults(handler=command_evaluate)

    floor = commands.add_parser("caption-floor", help="score the most common training caption on the test images")
    floor.add_argument("--data", required=True, help="Karpathy caption JSON")
    floor.add_argument("--images", required=True, help=IMAGES_HELP)
    floor.add_argument("--settings", help="settings (JSON or file): split, limit")
    floor.add_argument("--out", required=True, help="result JSON file")
    floor.set_defaults(handler=command_caption_floor)

    chance = commands.add_parser("scienceqa-chance", help="score a uniform random choice on the ScienceQA problems")
    chance.add_argument("--data", required=True, help="ScienceQA folder (problems.json, pid_splits.json)")
    chance.add_argument("--settings", help="settings (JSON or file): split, limit")
    chance.add_argument("--out", required=True, help="result JSON file")
    chance.set_defaults(handler=command_scienceqa_chance)

    scenes = commands.add_parser("scenes", help="generate the tiny world's scenes, captions and ScienceQA problems")
    scenes.add_argument("--settings", required=True, help="the config's visual.scenes section (JSON or file)")
    scenes.add_argument("--out", required=True, help="output folder")
    scenes.set_defaults(handler=command_scenes)

    clip = commands.add_parser("clip", help="train the tiny CLIP on the training captions and score its retrieval")
    clip.add_argument("--settings", required=True, help="the config's visual.clip section (JSON or file)")
    clip.add_argument("--captions", required=True, help="Karpathy caption JSON")
    clip.add_argument("--images", required=True, help=IMAGES_HELP)
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
    aggregate.add_argument("--comparisons-csv", help="output: Excitor against every other method, paired on items")
    aggregate.add_argument("--timings-csv", help="output: wall-clock and memory figures, one row per run")
    aggregate.add_argument("--table-md", help="output: the headline metrics as a Markdown table")
    aggregate.add_argument("--provenance-csv", help="output: each run's git commit, package versions and input digests")
    aggregate.add_argument("--table-tex", help="output: the headline metrics as a LaTeX booktabs table")
    aggregate.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    aggregate.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per interval")
    aggregate.add_argument("--permutations", type=int, default=10000, help="permutations per paired test")
    aggregate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the permutations")
    aggregate.add_argument("--plot", help="also draw the knowledge-against-instructions plot to this file")
    aggregate.add_argument("--visual-plot", help="also draw the CIDEr and ScienceQA bars to this file")
    aggregate.add_argument("--pareto-plot",
                           help="also draw each headline metric against trainable parameters, with the Pareto front")
    aggregate.add_argument("--ablation-plot", help="also draw each metric against every ablation axis that varies")
    aggregate.set_defaults(handler=command_aggregate)

    plot = commands.add_parser("plot", help="draw one plot of the results")
    plot.add_argument("--kind", choices=sorted(PLOT_KINDS), default="knowledge-vs-instructions",
                      help="knowledge-vs-instructions reads --runs-csv; score-vs-parameters, ablation and "
                           "visual-scores read --table-csv; efficiency reads --efficiency-csv")
    plot.add_argument("--runs-csv", help="runs.csv written by aggregate")
    plot.add_argument("--table-csv", help="table.csv written by aggregate")
    plot.add_argument("--efficiency-csv", help="efficiency.csv written by benchmark --csv")
    plot.add_argument("--out", required=True, help="output image (PNG, PDF or SVG)")
    plot.set_defaults(handler=command_plot)

    benchmark = commands.add_parser("benchmark",
                                    help="time every method's training step and generation against LoRA and the "
                                         "base model, with trainable parameters and memory")
    benchmark.add_argument("--config", default=None,
                           help="config YAML whose base_model and methods' defaults are measured, merged over "
                                "config/config.yaml")
    benchmark.add_argument("--model", help="a saved model folder or hub id; default: base_model.path, else a random "
                                           "model of the config's base_model sizes")
    benchmark.add_argument("--methods",
                           help="methods to measure (JSON or file): {method: {setting, hyperparameters}}; "
                                "default: each method's default setting in the config")
    benchmark.add_argument("--settings",
                           help="benchmark settings (JSON or file): rounds, steps_per_round, batch_size, "
                                "sequence_length, generation_batch, prompt_length, new_tokens, device, dtype")
    benchmark.add_argument("--rounds", type=int, default=None,
                           help="interleaved timing rounds, the median is kept (overrides --settings; default 21)")
    benchmark.add_argument("--out", default="results/benchmark.json", help="output JSON file")
    benchmark.add_argument("--csv", help="also write one row per method (and base) to this CSV file")
    benchmark.add_argument("--plot", help="also draw the efficiency ratios from --csv to this image")
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
