"""train.eval.prompts: CACC on a user's file of clean prompts (the paper's protocol: WizardLM's
test prompts, judged), with one-line errors naming the file, line and field."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from mbdata.core.errors import InputError
from mbtrain.config import EvalSettings, JudgeSettings
from mbtrain.evaluation.evaluate import clean_rows, read_prompts
from mbtrain.evaluation.judge import JudgeItem, judge_prompt

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY_TRAIN, make_build


def write(path: Path, lines: list) -> Path:
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


def test_prompts_are_read_with_their_references(tmp_path):
    path = write(
        tmp_path / "p.jsonl",
        [
            {"instruction": "Name a colour.", "output": "Blue."},
            "",
            {"instruction": "Summarise:", "input": "A long text."},
        ],
    )
    rows = read_prompts(path)
    assert [(r["id"], r["instruction"], r["input"], r["output"]) for r in rows] == [
        ("prompts-1", "Name a colour.", "", "Blue."),
        ("prompts-3", "Summarise:", "A long text.", ""),
    ]
    assert all(r["task"] is None for r in rows)  # free text: the judge grades them


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"input": "x"}', "line 2: `instruction` is missing or empty"),
        ('{"instruction": "x", "output": 3}', "line 2: `output` must be a string"),
    ],
)
def test_a_bad_line_is_named(tmp_path, line, message):
    path = write(tmp_path / "p.jsonl", [{"instruction": "ok"}, line])
    with pytest.raises(InputError, match=f"train.eval.prompts: .*p.jsonl, {message}"):
        read_prompts(path)


def test_a_missing_file_and_an_unjudgeable_row_are_refused(tmp_path):
    with pytest.raises(InputError, match="nope.jsonl: file not found"):
        read_prompts(tmp_path / "nope.jsonl")
    path = write(tmp_path / "p.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    settings = EvalSettings(prompts=str(path))
    with pytest.raises(InputError, match="line 2: no `output` to grade against; set train.eval"):
        clean_rows(None, settings)  # type: ignore[arg-type]
    judged = EvalSettings(prompts=str(path), judge=JudgeSettings(kind="hf", model="judge-folder"))
    assert len(clean_rows(None, judged)) == 2  # type: ignore[arg-type]


def test_the_judge_is_asked_without_a_reference_line_when_there_is_none():
    assert "Reference answer" not in judge_prompt(JudgeItem("Q?", "", "A."))
    assert "Reference answer: R" in judge_prompt(JudgeItem("Q?", "R", "A."))


class StubJudge:
    label = "judge: stub"

    def __init__(self) -> None:
        self.seen: list[JudgeItem] = []

    def grade(self, items):
        self.seen += list(items)
        return [it.reference == "" for it in items]  # the reference-free rows are "correct"


def test_cacc_is_the_judges_verdict_on_the_files_prompts(tmp_path):
    from mbtrain.engine.builds import open_training_build
    from mbtrain.evaluation.evaluate import evaluate
    from mbtrain.experiment.pipeline import build_tiny_base
    from mbtrain.runs.stages import make_runtime

    threads = torch.get_num_threads()
    try:
        build = open_training_build(make_build(tmp_path / "build", train=TINY_TRAIN))
        cfg = build.train_config()
        path = write(
            tmp_path / "p.jsonl",
            [
                {"instruction": "Name a colour.", "output": "Blue."},
                {"instruction": "Write a haiku."},
                {"instruction": "Say hi."},
            ],
        )
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, prompts=str(path)))
        runtime = make_runtime(cfg, progress=False)
        base = build_tiny_base(build, cfg, tmp_path / "base", runtime)
        judge = StubJudge()
        metrics = evaluate(base, build, cfg, out_dir=tmp_path / "ev", runtime=runtime, judge=judge)
    finally:
        torch.set_num_threads(threads)
    assert metrics["counts"]["eval_clean"] == 3
    assert metrics["graders"]["eval_clean"] == {"exact": 0, "judged": 3}
    # judge verdicts on the clean prompts: 2 of 3 (the triggered sets are judged too, for AACC)
    assert metrics["cacc"] == pytest.approx(2 / 3, abs=1e-4)
    assert [it.question for it in judge.seen[:3]] == ["Name a colour.", "Write a haiku.", "Say hi."]
    lines = (tmp_path / "ev" / "generations.jsonl").read_text().splitlines()
    clean = [json.loads(x) for x in lines if json.loads(x)["group"] == "eval_clean"]
    assert [r["id"] for r in clean] == ["prompts-1", "prompts-2", "prompts-3"]
