# Helpers shared by the rules: config validation, the expanded grid and the paths of inputs.

import json
import shlex
import sys
from pathlib import Path

import yaml

from excitor_bench.config import ConfigFiles, check_data_paths, validate_config
from excitor_bench.errors import UserError
from excitor_bench.grid import expand_grid, expand_visual_grid


CONFIG_FILES = ConfigFiles(workflow.configfiles, workflow.config_settings.config)
try:
    validate_config(config, CONFIG_FILES)
    check_data_paths(config, CONFIG_FILES)
    SETTINGS = {(s.method, s.setting_id): s for s in expand_grid(config, CONFIG_FILES)}
    VISUAL = config.get("visual") or {"enabled": False}
    VISUAL_SETTINGS = (
        {(s.method, s.setting_id): s for s in expand_visual_grid(config, CONFIG_FILES)} if VISUAL["enabled"] else {}
    )
    # The visual runs' own default settings, which visual.defaults may have changed.
    VISUAL_DEFAULT_SETTINGS = {}
    for method, setting_id in VISUAL_SETTINGS:
        VISUAL_DEFAULT_SETTINGS.setdefault(method, setting_id)
except UserError as error:
    # A mistake in the config: one line, no traceback, and nothing already computed is touched.
    sys.exit(f"error: {error}")
SEEDS = [int(seed) for seed in config["seeds"]]
# Each method's first setting is its default one; the paired comparisons use it.
DEFAULT_SETTINGS = {}
for method, setting_id in SETTINGS:
    DEFAULT_SETTINGS.setdefault(method, setting_id)
EVALUATIONS = ["mmlu", "instructions"]
VISUAL_EVALUATIONS = ["captions", "scienceqa"]

# Rules call the excitor-bench command. Appending this interpreter's folder to PATH finds it when
# snakemake was started as .venv/bin/snakemake without activating the environment, while a conda
# environment (--sdm conda) still comes first.
shell.prefix(f'export PATH="$PATH:{Path(sys.executable).parent}"; ')

WORLD = "results/world"
BASE_MODEL = config["base_model"]["path"] or "results/base_model"
DATA = {
    "alpaca": config["data"]["alpaca"] or f"{WORLD}/alpaca/train.json",
    "mmlu": config["data"]["mmlu"] or f"{WORLD}/mmlu",
    "instructions": config["data"]["instructions_test"] or f"{WORLD}/instructions/test.json",
}


SCENES = f"{WORLD}/scenes"
VISUAL_DATA = {
    "coco": (VISUAL.get("data") or {}).get("coco") or f"{SCENES}/coco/dataset_coco.json",
    "coco_images": (VISUAL.get("data") or {}).get("coco_images") or f"{SCENES}/coco/images",
    "scienceqa": (VISUAL.get("data") or {}).get("scienceqa") or f"{SCENES}/scienceqa",
}
VISION_MODEL = VISUAL.get("vision_model") or "results/clip"
SCIENCEQA_PROBLEMS = f"{VISUAL_DATA['scienceqa']}/problems.json"
# The scenes' text joins the tiny model's corpus, so that the base model knows the words of the
# captions and problems before it sees an image, as LLaMA knows English.
SCENE_CORPUS = [f"{SCENES}/corpus.txt"] if VISUAL["enabled"] else []


def quoted_json(value):
    return shlex.quote(json.dumps(value, sort_keys=True))


def base_model_input(wildcards):
    """The pretraining output when the tiny model is used; nothing to build for a given model."""
    return [] if config["base_model"]["path"] else ["results/base_model/config.json"]


def run_spec(wildcards):
    """Everything the trainer needs for one run, recorded in the run folder as spec.json."""
    setting = SETTINGS[(wildcards.method, wildcards.setting)]
    return {
        "method": setting.method,
        "setting": setting.setting_id,
        "default": DEFAULT_SETTINGS[setting.method] == setting.setting_id,
        "hyperparameters": setting.hyperparameters,
        "seed": int(wildcards.seed),
        "training": config["training"],
        "base_model": BASE_MODEL,
        "train_data": DATA["alpaca"],
    }


def evaluation_data(wildcards):
    """The file that must exist before an evaluation: for the world's MMLU, the file that lists its subjects."""
    if wildcards.evaluation == "mmlu" and not config["data"]["mmlu"]:
        return f"{WORLD}/mmlu/subjects.json"
    return DATA[wildcards.evaluation]


def evaluation_settings(wildcards):
    return quoted_json({**config["evaluation"][wildcards.evaluation], **config["inference"]})


def all_evaluations():
    runs = [
        f"results/runs/{method}/{setting}/seed{seed}/eval/{evaluation}.json"
        for (method, setting) in SETTINGS
        for seed in SEEDS
        for evaluation in EVALUATIONS
    ]
    return [f"results/base/eval/{evaluation}.json" for evaluation in EVALUATIONS] + runs


wildcard_constraints:
    method="|".join(sorted({method for method, _ in SETTINGS})),
    seed=r"\d+",
    evaluation="|".join(EVALUATIONS),
    vevaluation="|".join(VISUAL_EVALUATIONS),


def coco_images(wildcards):
    """The folder that holds the Karpathy file's image folders."""
    return VISUAL_DATA["coco_images"]


def vision_model_input(wildcards):
    """The tiny CLIP's config when it is trained by the workflow; nothing for a given CLIP."""
    return [] if VISUAL.get("vision_model") else ["results/clip/config.json"]


def visual_run_spec(wildcards):
    """Everything the visual trainer needs for one run, recorded in the run folder as spec.json."""
    setting = VISUAL_SETTINGS[(wildcards.method, wildcards.setting)]
    return {
        "task": "visual",
        "method": setting.method,
        "setting": setting.setting_id,
        "default": VISUAL_DEFAULT_SETTINGS[setting.method] == setting.setting_id,
        "hyperparameters": setting.hyperparameters,
        "seed": int(wildcards.seed),
        "training": {**config["training"], **(VISUAL.get("training") or {})},
        "base_model": BASE_MODEL,
        "vision_model": VISION_MODEL,
        "features": VISUAL.get("features", "global"),
        "data": VISUAL_DATA,
    }


def visual_evaluation_data(wildcards):
    """The evaluation's data options: the Karpathy file and its image folder, or the ScienceQA folder."""
    if wildcards.vevaluation == "captions":
        return f"--data {VISUAL_DATA['coco']} --images {VISUAL_DATA['coco_images']}"
    return f"--data {VISUAL_DATA['scienceqa']}"


def visual_evaluation_settings(wildcards):
    return quoted_json({**config["evaluation"][wildcards.vevaluation], **config["inference"]})


def all_visual_evaluations():
    if not VISUAL["enabled"]:
        return []
    runs = [
        f"results/visual/runs/{method}/{setting}/seed{seed}/eval/{evaluation}.json"
        for (method, setting) in VISUAL_SETTINGS
        for seed in SEEDS
        for evaluation in VISUAL_EVALUATIONS
    ]
    base = [f"results/visual/base/eval/{evaluation}.json" for evaluation in VISUAL_EVALUATIONS]
    floors = ["results/visual/most_common_caption/eval/captions.json",
              "results/visual/random_choice/eval/scienceqa.json"]
    return base + floors + runs
