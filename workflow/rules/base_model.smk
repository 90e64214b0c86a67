# Pretrain the tiny LLaMA (grouped-query attention) on the world's corpus and save it as any LLaMA is saved.
rule pretrain:
    input:
        corpus=[f"{WORLD}/corpus.txt"] + SCENE_CORPUS,
        tokenizer="results/tokenizer/tokenizer.json",
    output:
        "results/base_model/config.json",
    params:
        model=quoted_json({k: v for k, v in config["base_model"].items() if k != "path"}),
        training=quoted_json(config["pretrain"]),
        tokenizer=lambda wildcards, input: Path(input.tokenizer).parent,
        out=lambda wildcards, output: Path(output[0]).parent,
    threads: workflow.cores
    log:
        "results/logs/pretrain.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench --threads {threads} pretrain --model-settings {params.model}"
        " --train-settings {params.training} --corpus {input.corpus} --tokenizer {params.tokenizer}"
        " --out {params.out} > {log} 2>&1"
