# LLaMA-Excitor benchmark: tunes every method over the configured ablation grid, evaluates each
# run on MMLU-format knowledge and held-out instructions, tunes it again with images for COCO-format
# captions and ScienceQA, and renders results/table.csv and plots.
#
#   snakemake --cores all results/table.csv          # the built-in tiny world, on a CPU
#   snakemake --configfile config/other.yaml --workflow-profile profiles/slurm ...


from snakemake.utils import min_version

min_version("9.0")


# The built-in default, found beside this file so that --directory elsewhere still works.
# --configfile FILE is merged over it, key by key.
configfile: f"{workflow.basedir}/config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/base_model.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/visual.smk"
include: "workflow/rules/aggregate.smk"


# The whole suite: the table, the per-run table and the plot.
rule all:
    input:
        "results/table.csv",
        "results/runs.csv",
        "results/plots/knowledge_vs_instructions.png",
        VISUAL_PLOT.values(),
    default_target: True
