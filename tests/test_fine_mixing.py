"""Fine-mixing (mbtrain.runs.finemixing): the mixed weights against a hand computation on a tiny model,
and the run trained from the attacked model with its mixing recorded."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from mbtrain.runs.finemixing import mix_weights

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY_TRAIN, make_build


class Tiny(torch.nn.Module):
    """Two linear layers and an embedding tied to the output layer (like many causal LMs)."""

    def __init__(self, start: float):
        super().__init__()
        self.embed = torch.nn.Embedding(3, 2)
        self.hidden = torch.nn.Linear(2, 2)
        self.out = torch.nn.Linear(2, 3, bias=False)
        self.out.weight = self.embed.weight  # tied
        with torch.no_grad():
            for i, p in enumerate(self.parameters()):
                p.copy_(start + 10 * i + torch.arange(p.numel(), dtype=torch.float32).view(p.shape))


def hand_mix(attacked: dict, base: dict, keep: float, seed: int) -> dict:
    """The documented rule, written out: per tensor NAME, a generator seeded with the first 8
    bytes (little endian) of sha256("SEED:NAME") permutes the flat entries; the first
    round(keep * n) keep the attacked value, the others take the base's."""
    out = {}
    for name, a in attacked.items():
        n = a.numel()
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        kept = set(torch.randperm(n, generator=g)[: int(round(keep * n))].tolist())
        flat_a, flat_b = a.reshape(-1).tolist(), base[name].reshape(-1).tolist()
        out[name] = [flat_a[i] if i in kept else flat_b[i] for i in range(n)]
    return out


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_mixed_weights_match_the_hand_computation():
    attacked, base = Tiny(100.0), Tiny(-100.0)
    before_a, before_b = params(attacked), params(base)
    assert set(before_a) == {"embed.weight", "hidden.weight", "hidden.bias"}  # tied: once
    counts = mix_weights(attacked, base, keep=0.5, seed=7)
    expected = hand_mix(before_a, before_b, 0.5, 7)
    for name, p in attacked.named_parameters():
        assert p.reshape(-1).tolist() == expected[name]
        # every entry is one of the two models' values, round(keep * n) of them the attacked one
        kept = sum(v >= 50 for v in p.reshape(-1).tolist())
        assert kept == round(0.5 * p.numel())
    assert counts == {"kept": 3 + 2 + 1, "reset": 3 + 2 + 1}  # 6 + 4 + 2 entries
    assert torch.equal(attacked.out.weight, attacked.embed.weight)  # still tied
    assert all(torch.equal(v, before_b[k]) for k, v in params(base).items())  # base untouched


def test_keep_zero_is_the_base_and_keep_one_the_attacked_model():
    attacked, base = Tiny(100.0), Tiny(-100.0)
    original = params(attacked)
    mix_weights(attacked, base, keep=1.0, seed=0)
    assert all(torch.equal(v, original[k]) for k, v in params(attacked).items())
    mix_weights(attacked, base, keep=0.0, seed=0)
    assert all(torch.equal(v, params(base)[k]) for k, v in params(attacked).items())


def test_the_seed_decides_the_entries():
    a1, a2, base = Tiny(100.0), Tiny(100.0), Tiny(-100.0)
    mix_weights(a1, base, keep=0.5, seed=1)
    mix_weights(a2, base, keep=0.5, seed=2)
    assert not torch.equal(a1.hidden.weight, a2.hidden.weight) or not torch.equal(
        a1.embed.weight, a2.embed.weight
    )
    a3 = Tiny(100.0)
    mix_weights(a3, base, keep=0.5, seed=1)
    assert all(torch.equal(v, params(a1)[k]) for k, v in params(a3).items())


def test_a_base_of_another_shape_is_refused():
    from mbdata.core.errors import MBError

    class Other(Tiny):
        def __init__(self) -> None:
            super().__init__(0.0)
            self.hidden = torch.nn.Linear(2, 4)

    with pytest.raises(MBError, match="fine-mixing: the base model has no weight 'hidden.weight'"):
        mix_weights(Tiny(1.0), Other(), keep=0.5, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_the_run_mixes_then_fine_tunes_and_records_the_mixing(tmp_path, mode):
    import dataclasses

    from mbtrain.engine.builds import open_training_build
    from mbtrain.engine.models import load_model, read_marker
    from mbtrain.experiment.pipeline import build_tiny_base, train_run
    from mbtrain.runs.stages import make_runtime

    threads = torch.get_num_threads()
    try:
        build_dir = make_build(tmp_path / "build", train=TINY_TRAIN)
        build = open_training_build(build_dir)
        cfg = build.train_config()
        stage2 = dataclasses.replace(cfg.stage2, mode=mode, epochs=1)
        cfg = dataclasses.replace(cfg, stage2=stage2)
        runtime = make_runtime(cfg, progress=False)
        base = build_tiny_base(build, cfg, tmp_path / "base", runtime)
        attacked = train_run(
            "attacked", base, build.rows("train"), tmp_path / "attacked", cfg, runtime
        )
        out = train_run(
            "fine_mixing",
            attacked,
            build.rows("recovery"),
            tmp_path / "fm",
            cfg,
            runtime,
            recovery_eval=build.rows("recovery_eval"),
            base=base,
        )
    finally:
        torch.set_num_threads(threads)
    marker = read_marker(out)
    assert marker["kind"] == "full"  # a LoRA result over a mixture is stored merged
    mixing = marker["fine_mixing"]
    assert mixing["keep"] == 0.5 and mixing["seed"] == cfg.seed
    assert mixing["base"] == {"path": "../base"}
    total = sum(p.numel() for p in load_model(base)[0].parameters())
    assert mixing["entries"]["kept"] + mixing["entries"]["reset"] == total
    assert abs(mixing["entries"]["kept"] - total / 2) <= len(list(load_model(base)[0].parameters()))
    assert marker["parent"] == {"path": "../attacked"} and marker["rows"] > 0
    # the same mixing from the attacked and base weights, as the record says
    a, _ = load_model(attacked)
    b, _ = load_model(base)
    mix_weights(a, b, mixing["keep"], mixing["seed"])
    trained, _ = load_model(out)
    with torch.no_grad():
        mixed = dict(a.named_parameters())
        moved = [float((p - mixed[n]).abs().max()) for n, p in trained.named_parameters()]
    assert max(moved) > 0  # then fine-tuned
    log = (out / "train_log.jsonl").read_text().splitlines()
    assert json.loads(log[0])["desc"] == "fine_mixing"


def test_mb_train_stage2_fine_mixing_needs_the_tiny_base(tmp_path, capsys):
    from cli.main import main

    build = make_build(tmp_path / "build", train=TINY_TRAIN)
    model = tmp_path / "attacked"
    model.mkdir()
    code = main(
        ["train", "stage2", str(build), "--model", str(model), "-o", str(tmp_path / "fm")]
        + ["--method", "fine-mixing", "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "mb train base BUILD -o DIR" in err and "--base DIR" in err
    assert "Traceback" not in err and not (tmp_path / "fm").exists()
    assert main(["train", "stage2", "--help"]) == 0
    assert "fine-mixing" in capsys.readouterr().out
