# Collect every evaluation into one row per run, the per-setting table and the plots.
VISUAL_PLOT = {"visual_plot": "results/plots/visual_scores.png"} if VISUAL["enabled"] else {}


rule aggregate:
    input:
        all_evaluations(),
        all_visual_evaluations(),
    output:
        runs=report("results/runs.csv", caption="../report/runs.rst", category="Tables"),
        table=report("results/table.csv", caption="../report/table.rst", category="Tables"),
        comparisons=report("results/comparisons.csv", caption="../report/comparisons.rst", category="Tables"),
        timings="results/timings.csv",
        provenance=report("results/provenance.csv", caption="../report/provenance.rst", category="Provenance"),
        table_md="results/table.md",
        table_tex="results/table.tex",
        plot=report(
            "results/plots/knowledge_vs_instructions.png",
            caption="../report/knowledge_vs_instructions.rst",
            category="Plots",
            subcategory="Scores",
        ),
        pareto_plot=report(
            "results/plots/score_vs_parameters.png",
            caption="../report/score_vs_parameters.rst",
            category="Plots",
            subcategory="Scores",
        ),
        ablation_plot=report(
            "results/plots/ablation.png",
            caption="../report/ablation.rst",
            category="Plots",
            subcategory="Ablation",
        ),
        **{
            name: report(path, caption="../report/visual_scores.rst", category="Plots", subcategory="Visual")
            for name, path in VISUAL_PLOT.items()
        },
    params:
        visual_plot=lambda wildcards, output: f"--visual-plot {output.visual_plot}" if VISUAL_PLOT else "",
    log:
        "results/logs/aggregate.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench aggregate --evaluations {input} --runs-csv {output.runs} --table-csv {output.table}"
        " --comparisons-csv {output.comparisons} --timings-csv {output.timings}"
        " --table-md {output.table_md} --table-tex {output.table_tex} --provenance-csv {output.provenance}"
        " --plot {output.plot} --pareto-plot {output.pareto_plot} --ablation-plot {output.ablation_plot}"
        " {params.visual_plot} > {log} 2>&1"


# The config this invocation resolved (the default with every --configfile merged over it), for the report.
rule resolved_config:
    output:
        report("results/config.yaml", caption="../report/config.rst", category="Provenance"),
    params:
        config=shlex.quote(yaml.safe_dump(config, sort_keys=True)),
    log:
        "results/logs/resolved_config.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "printf '%s' {params.config} > {output} 2> {log}"
