# The visual half: the tiny CLIP, visual tuning runs, and caption and ScienceQA evaluations.


# Train the tiny CLIP contrastively on the training scenes, save it as a CLIP folder and score its
# image-to-caption retrieval on the test scenes. Skipped when visual.vision_model names a CLIP.
rule clip:
    input:
        coco=VISUAL_DATA["coco"],
    output:
        config="results/clip/config.json",
        retrieval="results/clip/retrieval.json",
    params:
        settings=quoted_json(VISUAL.get("clip") or {}),
        images=coco_images,
        out=lambda wildcards, output: Path(output.config).parent,
    # One thread: a model this small spends more time syncing threads than computing.
    threads: 1
    log:
        "results/logs/clip.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench --threads {threads} clip --settings {params.settings} --captions {input.coco}"
        " --images {params.images} --out {params.out} > {log} 2>&1"


# Tune one visual run on the training captions and ScienceQA problems, with the frozen CLIP.
rule train_visual:
    input:
        base_model_input,
        vision_model_input,
        coco=VISUAL_DATA["coco"],
        scienceqa=SCIENCEQA_PROBLEMS,
    output:
        spec="results/visual/runs/{method}/{setting}/seed{seed}/spec.json",
        figures="results/visual/runs/{method}/{setting}/seed{seed}/train.json",
        adapter=directory("results/visual/runs/{method}/{setting}/seed{seed}/adapter"),
    params:
        spec=lambda wildcards: quoted_json(visual_run_spec(wildcards)),
        out=lambda wildcards, output: Path(output.spec).parent,
    threads: 1
    log:
        "results/logs/train_visual/{method}/{setting}/seed{seed}.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench --threads {threads} train-visual --spec {params.spec} --out {params.out} > {log} 2>&1"


# The untuned base model on the visual tasks: it sees the text alone, the reference row.
rule evaluate_visual_base:
    input:
        base_model_input,
        coco=VISUAL_DATA["coco"],
        scienceqa=SCIENCEQA_PROBLEMS,
    output:
        "results/visual/base/eval/{vevaluation}.json",
    params:
        settings=visual_evaluation_settings,
        data_options=visual_evaluation_data,
        base_model=BASE_MODEL,
    threads: 1
    log:
        "results/logs/evaluate_visual/base/{vevaluation}.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench --threads {threads} evaluate {wildcards.vevaluation} --base-model {params.base_model}"
        " {params.data_options} --settings {params.settings} --out {output} > {log} 2>&1"


# Evaluate one visual run, rebuilt from its saved adapter and projection.
rule evaluate_visual_run:
    input:
        base_model_input,
        vision_model_input,
        coco=VISUAL_DATA["coco"],
        scienceqa=SCIENCEQA_PROBLEMS,
        adapter="results/visual/runs/{method}/{setting}/seed{seed}/adapter",
    output:
        "results/visual/runs/{method}/{setting}/seed{seed}/eval/{vevaluation}.json",
    params:
        settings=visual_evaluation_settings,
        data_options=visual_evaluation_data,
        base_model=BASE_MODEL,
        vision_model=VISION_MODEL,
        run=lambda wildcards, input: Path(input.adapter).parent,
    threads: 1
    log:
        "results/logs/evaluate_visual/{method}/{setting}/seed{seed}/{vevaluation}.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench --threads {threads} evaluate {wildcards.vevaluation} --base-model {params.base_model}"
        " --run {params.run} --vision-model {params.vision_model} {params.data_options}"
        " --settings {params.settings} --out {output} > {log} 2>&1"


# The floor a captioner must beat: the most common training caption, given for every test image.
# The floor of ScienceQA: a uniform random choice, scored as its expected accuracy on each problem.
rule scienceqa_chance:
    input:
        scienceqa=SCIENCEQA_PROBLEMS,
    output:
        "results/visual/random_choice/eval/scienceqa.json",
    params:
        data=lambda wildcards, input: Path(input.scienceqa).parent,
        settings=quoted_json({k: v for k, v in config["evaluation"]["scienceqa"].items() if k in ("split", "limit")}),
    log:
        "results/logs/scienceqa_chance.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench scienceqa-chance --data {params.data} --settings {params.settings} --out {output} > {log} 2>&1"


rule caption_floor:
    input:
        coco=VISUAL_DATA["coco"],
    output:
        "results/visual/most_common_caption/eval/captions.json",
    params:
        images=coco_images,
        settings=quoted_json({k: v for k, v in config["evaluation"]["captions"].items() if k in ("split", "limit")}),
    log:
        "results/logs/caption_floor.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench caption-floor --data {input.coco} --images {params.images} --settings {params.settings}"
        " --out {output} > {log} 2>&1"
