# LLaMA-Excitor benchmark: tunes every method over the configured ablation grid, evaluates each
# run on MMLU-format knowledge and held-out instructions, tunes it again with images for COCO-format
# captions and ScienceQA, times every method (results/efficiency.csv) and renders results/table.csv
# and plots.
#
#   snakemake --cores all results/table.csv          # the built-in tiny world, on a CPU
#   snakemake --cores all                            # everything, efficiency figures included
#   snakemake --cores all --report results/report.html   # after a run: one self-contained HTML report
#   snakemake --configfile config/other.yaml --workflow-profile profiles/slurm ...


from snakemake.utils import min_version

min_version("9.0")


# The built-in default, found beside this file so that --directory elsewhere still works.
# --configfile FILE is merged over it, key by key.
configfile: f"{workflow.basedir}/config/config.yaml"


# `snakemake --cores all --report results/report.html` after a run: this text, the tables and the plots.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/base_model.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/visual.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/efficiency.smk"


# The whole suite: the tables, the plots and the efficiency figures.
rule all:
    input:
        "results/table.csv",
        "results/runs.csv",
        "results/comparisons.csv",
        "results/table.md",
        "results/table.tex",
        "results/provenance.csv",
        "results/plots/knowledge_vs_instructions.png",
        "results/plots/score_vs_parameters.png",
        "results/plots/ablation.png",
        VISUAL_PLOT.values(),
        "results/efficiency.csv",
        "results/plots/efficiency.png",
        "results/config.yaml",
    default_target: True
