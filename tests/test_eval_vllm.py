"""The optional vLLM evaluation backend (``train.eval.backend: vllm``), without vLLM: a stand-in
``vllm`` module (injected into ``sys.modules``) records the ``LLM(...)`` and ``SamplingParams``
arguments, loads the folder it is given the way vLLM needs it (safetensors weights + tokenizer)
and answers greedily one prompt at a time with transformers. The backend must hand it the same
token-id prompts, greedy decoding, ``max_new_tokens`` and stop ids as the default ``hf`` backend,
so both backends give the same generations and metrics through the same scoring path."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from mbdata.core.config import from_mapping, to_mapping
from mbdata.core.errors import MBError, RecipeError
from mbtrain.config import EvalSettings, LoraSettings, TinyModel, TrainConfig
from mbtrain.engine.models import save_model, wrap_lora
from mbtrain.runs.stages import Runtime

CPU = Runtime(device=torch.device("cpu"), amp=None, progress=False)
SETTINGS = TinyModel(
    vocab_size=300, hidden_size=16, layers=1, heads=2, intermediate_size=32, max_positions=256
)


class FakeVLLM(types.ModuleType):
    """What mbtrain uses of vLLM: ``LLM(**kw).generate(prompts, params, use_tqdm=)`` returning
    ``RequestOutput``-like objects, and ``SamplingParams(**kw)``."""

    def __init__(self) -> None:
        super().__init__("vllm")
        self.llm_calls: list[dict] = []
        self.params: list[dict] = []
        self.folders: list[set[str]] = []
        fake = self

        class SamplingParams:
            def __init__(self, **kw):
                fake.params.append(kw)
                self.__dict__.update(kw)

        class LLM:
            def __init__(self, **kw):
                from transformers import AutoModelForCausalLM, AutoTokenizer

                fake.llm_calls.append(kw)
                folder = kw["model"]
                fake.folders.append({p.name for p in Path(folder).iterdir()})
                # as vLLM does: safetensors weights and the tokenizer from the folder
                self.model = AutoModelForCausalLM.from_pretrained(
                    folder, use_safetensors=True, dtype=torch.float32
                ).eval()
                self.tokenizer = AutoTokenizer.from_pretrained(kw["tokenizer"])

            def generate(self, prompts, params, use_tqdm=True):
                outs = []
                for p in prompts:
                    ids = torch.tensor([p["prompt_token_ids"]])
                    with torch.no_grad():
                        out = self.model.generate(
                            input_ids=ids,
                            attention_mask=torch.ones_like(ids),
                            max_new_tokens=params.max_tokens,
                            do_sample=False,
                            eos_token_id=params.stop_token_ids,
                            pad_token_id=params.stop_token_ids[0],
                        )
                    tokens = out[0, ids.shape[1] :].tolist()
                    for j, t in enumerate(tokens):  # vLLM keeps the stop token in token_ids
                        if t in params.stop_token_ids:
                            tokens = tokens[: j + 1]
                            break
                    stop = bool(tokens) and tokens[-1] in params.stop_token_ids
                    completion = types.SimpleNamespace(
                        token_ids=tokens,
                        text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                        finish_reason="stop" if stop else "length",
                    )
                    outs.append(types.SimpleNamespace(outputs=[completion]))
                return outs

        self.LLM = LLM
        self.SamplingParams = SamplingParams


@pytest.fixture
def fake_vllm(monkeypatch):
    module = FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A full mbtrain folder and a LoRA folder on top of it (adapter weights made non-zero so
    the merge matters)."""
    from test_train_helpers import make_build

    from mbtrain.engine.tiny import tiny_model, train_tokenizer

    root = tmp_path_factory.mktemp("vllm")
    build_dir = make_build(root / "build", n_pretrain=2, n_train=6, n_recovery=1, n_eval=3)
    from mbtrain.engine.builds import open_training_build

    texts = [
        r["instruction"] + " " + r["output"] for r in open_training_build(build_dir).rows("train")
    ]
    tokenizer = train_tokenizer(texts * 3, 300)
    model = tiny_model(SETTINGS, tokenizer, seed=3)
    torch.manual_seed(5)
    with torch.no_grad():  # a random init only emits special tokens: make it say something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    full = root / "full"
    save_model(model, tokenizer, full, {"kind": "full", "stage": "test", "parent": None})
    torch.manual_seed(4)
    peft_model = wrap_lora(tiny_model(SETTINGS, tokenizer, seed=3), LoraSettings(r=2))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    lora = root / "lora"
    save_model(
        peft_model, tokenizer, lora, {"kind": "lora", "stage": "t", "parent": {"path": "../full"}}
    )
    return build_dir, full, lora


def _evaluate(build_dir, model_dir, out, backend, vllm_args=None):
    from mbtrain.engine.builds import open_training_build
    from mbtrain.evaluation.evaluate import evaluate

    build = open_training_build(build_dir)
    cfg = from_mapping(
        TrainConfig,
        {
            "model": {"template": "alpaca_short", "device": "cpu"},
            "eval": {
                "max_new_tokens": 6,
                "backend": backend,
                **({"vllm_args": vllm_args} if vllm_args else {}),
            },
        },
        "train",
    )
    return evaluate(model_dir, build, cfg, out_dir=out, runtime=CPU, name="m")


def _generations(out):
    return [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_vllm_backend_gives_the_hf_backend_generations_and_metrics(
    fake_vllm, models, tmp_path, kind
):
    build_dir, full, lora = models
    folder = full if kind == "full" else lora
    hf = _evaluate(build_dir, folder, tmp_path / "hf", "hf")
    vl = _evaluate(build_dir, folder, tmp_path / "vllm", "vllm", {"gpu_memory_utilization": 0.5})
    assert _generations(tmp_path / "vllm") == _generations(tmp_path / "hf")
    assert sum(bool(g["generation"]) for g in _generations(tmp_path / "hf")) >= 3  # not vacuous
    drop = ("seconds", "generation")
    assert {k: v for k, v in vl.items() if k not in drop} == {
        k: v for k, v in hf.items() if k not in drop
    }
    assert hf["generation"]["backend"] == "hf" and vl["generation"]["backend"] == "vllm"
    for key in ("prompts", "max_new_tokens", "new_tokens", "cut_at_max"):
        assert vl["generation"][key] == hf["generation"][key]
    assert (tmp_path / "vllm" / "metrics.json").is_file()

    # the mapping onto vLLM: one engine, greedy, the same cap and stop ids
    (call,) = fake_vllm.llm_calls
    assert call["dtype"] == "float32" and call["seed"] == 0 and call["trust_remote_code"] is False
    assert call["gpu_memory_utilization"] == 0.5 and call["tokenizer"] == call["model"]
    (params,) = fake_vllm.params
    assert params["temperature"] == 0.0 and params["n"] == 1
    assert params["max_tokens"] == hf["generation"]["max_new_tokens"] == 6
    assert params["stop_token_ids"] and params["skip_special_tokens"] is True
    (files,) = fake_vllm.folders
    assert "model.safetensors" in files and "tokenizer.json" in files and "config.json" in files
    if kind == "full":  # handed over as it is
        assert call["model"] == str(full)
    else:  # merged into a temporary safetensors folder, removed afterwards
        assert call["model"] != str(lora) and "adapter_config.json" not in files
        assert not Path(call["model"]).exists()


def test_a_missing_vllm_is_a_one_line_error_naming_the_install(monkeypatch, models, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    build_dir, full, _ = models
    with pytest.raises(MBError) as err:
        _evaluate(build_dir, full, tmp_path / "out", "vllm")
    text = str(err.value)
    assert "pip install vllm" in text and "\n" not in text
    assert text.startswith("train.eval.backend: 'vllm' needs vLLM")
    assert not (tmp_path / "out").exists()  # nothing written


def test_backend_keys_are_validated_and_left_out_of_the_resolved_block_by_default():
    assert "backend" not in to_mapping(EvalSettings()) and "vllm_args" not in to_mapping(
        EvalSettings()
    )
    cfg = from_mapping(TrainConfig, {"eval": {"backend": "vllm"}}, "train")
    assert to_mapping(cfg.eval)["backend"] == "vllm"
    with pytest.raises(RecipeError, match=r"train\.eval\.backend: 'vlm' is not allowed"):
        from_mapping(TrainConfig, {"eval": {"backend": "vlm"}}, "train")
    with pytest.raises(RecipeError, match=r"train\.eval\.vllm_args: only used with backend: vllm"):
        from_mapping(TrainConfig, {"eval": {"vllm_args": {"a": 1}}}, "train")
    assert dataclasses.replace(EvalSettings(), backend="vllm").backend == "vllm"
