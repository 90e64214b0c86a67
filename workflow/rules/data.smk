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


# Train the tiny model's byte-level BPE tokenizer on the corpus and the instructions.
rule tokenizer:
    input:
        corpus=f"{WORLD}/corpus.txt",
        alpaca=f"{WORLD}/alpaca/train.json",
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
        "excitor-bench tokenizer --files {input.corpus} {input.alpaca} --vocab-size {params.vocab_size}"
        " --out {params.out} > {log} 2>&1"
