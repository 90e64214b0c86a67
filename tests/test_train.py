import json
from pathlib import Path

import pytest
import transformers
from safetensors.torch import load_file

from excitor_bench.cli import main
from excitor_bench.data import load_alpaca
from excitor_bench.errors import UserError
from excitor_bench.provenance import file_digest
from excitor_bench.train import batch_order, train


def spec_for(method, model_dir, world, **hyperparameters):
    return {
        "method": method,
        "setting": "test",
        "hyperparameters": {"learning_rate": 1e-3, **hyperparameters},
        "seed": 0,
        "training": {"steps": 4, "batch_size": 4, "max_length": 256, "warmup_steps": 1, "log_every": 2},
        "base_model": str(model_dir),
        "train_data": str(world / "alpaca" / "train.json"),
    }


def test_batch_order_depends_only_on_seed():
    first = batch_order(num_examples=10, steps=7, batch_size=3, seed=5)

    assert first == batch_order(num_examples=10, steps=7, batch_size=3, seed=5)
    assert first != batch_order(num_examples=10, steps=7, batch_size=3, seed=6)
    # Each epoch is a permutation: the first 10 indices cover every example once.
    flat = [index for step in first for index in step]
    assert sorted(flat[:10]) == list(range(10))
    assert len(first) == 7


def test_grouped_batches_similar_lengths_shuffled():
    # 400 examples of two lengths, interleaved: random batches of 4 would mix them almost always.
    lengths = [10 if i % 2 else 90 for i in range(400)]
    batches = batch_order(num_examples=400, steps=250, batch_size=4, seed=3, lengths=lengths)

    assert len(batches) == 250
    first_epoch = [index for batch in batches[:100] for index in batch]
    assert sorted(first_epoch) == list(range(400))
    # Each mega-batch of 100 examples is sorted by length, so at most one batch in it mixes the two.
    mixed = [batch for batch in batches if len({lengths[i] for i in batch}) > 1]
    assert len(mixed) <= 250 // 25 + 1
    # The batches are shuffled: long and short ones alternate instead of forming one run each.
    kinds = [lengths[batch[0]] for batch in batches[:100]]
    changes = sum(a != b for a, b in zip(kinds, kinds[1:]))
    assert changes > 20
    assert batches == batch_order(num_examples=400, steps=250, batch_size=4, seed=3, lengths=lengths)
    assert batches != batch_order(num_examples=400, steps=250, batch_size=4, seed=4, lengths=lengths)


def test_grouped_batches_keep_short_last_batch():
    lengths = list(range(50))
    batches = batch_order(num_examples=50, steps=14, batch_size=8, seed=0, lengths=lengths)

    # 50 examples make 6 full batches and one of 2 per epoch.
    assert sorted(len(batch) for batch in batches[:7]) == [2, 8, 8, 8, 8, 8, 8]
    assert sorted(index for batch in batches[7:14] for index in batch) == list(range(50))


def test_train_records_figures_and_provenance(tmp_path, micro_model_dir, micro_world):
    spec = spec_for("lora", micro_model_dir, micro_world, rank=2)
    figures = train(spec, tmp_path)

    recorded = json.loads((tmp_path / "train.json").read_text())
    assert len(recorded["losses"]) == 4
    assert figures["trainable_parameters"] < figures["total_parameters"]
    assert figures["adapter_bytes"] > 0
    assert figures["tokens_per_second"] > 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["spec"] == spec
    assert provenance["inputs"]["train_data"]["sha256"] == file_digest(Path(spec["train_data"]))
    assert provenance["inputs"]["base_model"]["sha256"] == file_digest(micro_model_dir)
    assert provenance["packages"]["transformers"] == transformers.__version__


def test_train_is_deterministic(tmp_path, micro_model_dir, micro_world):
    spec = spec_for("excitor", micro_model_dir, micro_world, rank=2, prompt_length=4, num_layers=1)
    train(spec, tmp_path / "a")
    train(spec, tmp_path / "b")

    first = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    second = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert (first[name] == second[name]).all(), name
    losses_a = json.loads((tmp_path / "a" / "train.json").read_text())["losses"]
    losses_b = json.loads((tmp_path / "b" / "train.json").read_text())["losses"]
    assert losses_a == losses_b


def test_alpaca_record_without_output(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": ""}]))

    with pytest.raises(UserError) as error:
        load_alpaca(path)

    assert str(path) in str(error.value)
    assert "record 1" in str(error.value)
    assert "'output'" in str(error.value)


def test_cli_reports_unknown_method(tmp_path, micro_model_dir, micro_world, capsys):
    spec = spec_for("adapterx", micro_model_dir, micro_world)

    status = main(["train", "--spec", json.dumps(spec), "--out", str(tmp_path / "run")])

    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2
    assert message.startswith("error:")
    assert "adapterx" in message
    assert "Traceback" not in capsys.readouterr().err
