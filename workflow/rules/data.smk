# Generate the tiny world: a corpus, MMLU-format questions, Alpaca-format instructions and a held-out set.
rule world:
    output:
        corpus=f"{WORLD}/corpus.txt",
        alpaca=f"{WORLD}/alpaca/train.json",
        instructions=f"{WORLD}/instructions/test.json",
        subjects=f"{WORLD}/mmlu/subjects.json",
    params:
        settings=quoted_json(config["world"]),
        out=lambda wildcards, output: Path(output.corpus).parent,
    log:
        "results/logs/world.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench world --settings {params.settings} --out {params.out} > {log} 2>&1"


# Train the tiny model's byte-level BPE tokenizer on the corpus, the instructions and the scenes' text.
rule tokenizer:
    input:
        corpus=f"{WORLD}/corpus.txt",
        alpaca=f"{WORLD}/alpaca/train.json",
        scenes=SCENE_CORPUS,
    output:
        "results/tokenizer/tokenizer.json",
    params:
        vocab_size=config["tokenizer"]["vocab_size"],
        out=lambda wildcards, output: Path(output[0]).parent,
    log:
        "results/logs/tokenizer.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench tokenizer --files {input.corpus} {input.alpaca} {input.scenes} --vocab-size {params.vocab_size}"
        " --out {params.out} > {log} 2>&1"


# Generate the tiny world's visual part: scenes with COCO Karpathy-format captions, ScienceQA-format
# problems, and a text corpus about them.
rule scenes:
    output:
        coco=f"{SCENES}/coco/dataset_coco.json",
        scienceqa=f"{SCENES}/scienceqa/problems.json",
        corpus=f"{SCENES}/corpus.txt",
    params:
        settings=quoted_json(VISUAL.get("scenes") or {}),
        out=lambda wildcards, output: Path(output.corpus).parent,
    log:
        "results/logs/scenes.log",
    conda:
        "../envs/excitor.yaml"
    shell:
        "excitor-bench scenes --settings {params.settings} --out {params.out} > {log} 2>&1"
