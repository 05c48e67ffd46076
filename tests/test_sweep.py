"""`mb sweep`: grid parsing, one build per data setting, shared stage-1 / baseline models, resume
after an interruption, and the table (mean ± std over seeds), on the e2e tests' tiny recipe."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from cli.main import main
from mbdata.core.errors import MBError
from mbtrain.experiment import sweep

sys.path.insert(0, str(Path(__file__).parent))
from test_train_e2e import RECIPE


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    return path


def test_parse_set_reads_yaml_scalars_and_flow_lists():
    assert sweep.parse_set("defense.rate=0.01,0.04") == ("defense.rate", [0.01, 0.04])
    assert sweep.parse_set("train.stage1.mode=full,lora") == ("train.stage1.mode", ["full", "lora"])
    assert sweep.parse_set("defense.triggers=[mn,bb],4") == ("defense.triggers", [["mn", "bb"], 4])
    assert sweep.parse_set("train.baselines.clean_fft=true") == (
        "train.baselines.clean_fft",
        [True],
    )
    for bad in ("defense.rate", "=1", "a..b=1", "defense.rate="):
        with pytest.raises(MBError, match="--set"):
            sweep.parse_set(bad)


def test_set_path_indexes_lists_and_refuses_missing_items():
    data = {"sources": [{"path": "a"}], "train": None}
    sweep.set_path(data, "sources.0.path", "b")
    sweep.set_path(data, "train.stage2.lam", 0.5)
    assert data == {"sources": [{"path": "b"}], "train": {"stage2": {"lam": 0.5}}}
    with pytest.raises(MBError, match="1 items"):
        sweep.set_path(data, "sources.3.path", "c")


def test_plan_validates_every_point_and_groups_shared_work(tmp_path):
    recipe = _recipe(tmp_path)
    _, points = sweep.plan(
        recipe,
        [
            sweep.parse_set("defense.rate=0.05,0.1"),
            sweep.parse_set("train.stage2.lam=0.5,1.0"),
            sweep.parse_set("train.seed=0,1"),
        ],
    )
    assert len(points) == 8 and len({p.id for p in points}) == 8
    assert len({p.data_key for p in points}) == 2  # builds
    assert len({p.stage1_key for p in points}) == 4  # data x seed
    assert len({p.baseline_key for p in points}) == 4  # lam is MB-only
    assert len({p.stage2_key for p in points}) == 8
    assert len({p.group for p in points}) == 4  # seeds averaged
    assert sweep.describe(points).splitlines()[0] == (
        "8 points: 2 builds, 4 x (base, attacked, MB stage 1), "
        "4 x (Clean-FFT, Fine-mixing, trigger-aug), 8 x MB stage 2; 8 evaluations of MB-Defense"
    )
    with pytest.raises(MBError, match=r"sweep point .*train.stage2.lam=-1.*lam"):
        sweep.plan(recipe, [sweep.parse_set("train.stage2.lam=1,-1")])
    with pytest.raises(MBError, match=r"sweep point .*defense.rate"):
        sweep.plan(recipe, [sweep.parse_set("defense.rate=2")])


def test_plan_leaves_out_the_baselines_every_point_switches_off(tmp_path):
    """bench/mechanism_map.sh switches the baselines off: the plan must not promise them."""
    recipe = _recipe(tmp_path)
    sets = [sweep.parse_set("defense.rate=0.05,0.1")]
    sets += [
        sweep.parse_set(f"train.baselines.{b}=false")
        for b in ("clean_fft", "onion", "fine_mixing", "trigger_aug")
    ]
    _, points = sweep.plan(recipe, sets)
    assert sweep.describe(points).splitlines()[0] == (
        "2 points: 2 builds, 2 x (base, attacked, MB stage 1), 2 x MB stage 2; "
        "2 evaluations of MB-Defense"
    )
    _, points = sweep.plan(recipe, [sweep.parse_set("train.baselines.fine_mixing=false")])
    assert "1 x (Clean-FFT, trigger-aug)" in sweep.describe(points)


def test_set_inside_a_default_block_keeps_its_other_defaults(tmp_path):
    """The recipe leaves defense.behavior out: setting one key of it must change that key of the
    default behaviour (random_words), not replace the block with a mapping lacking `kind`."""
    recipe = _recipe(tmp_path)
    _, points = sweep.plan(recipe, [sweep.parse_set("defense.behavior.words=3,5")])
    behaviors = [p.recipe["defense"]["behavior"] for p in points]
    assert [(b["kind"], b["words"]) for b in behaviors] == [
        ("random_words", 3),
        ("random_words", 5),
    ]
    # the same setting spelled out in the recipe is the same point (same build, same id)
    spelled = tmp_path / "spelled.yaml"
    text = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    text["defense"]["behavior"] = {"kind": "random_words", "words": 3}
    spelled.write_text(yaml.safe_dump(text), encoding="utf-8")
    (same,) = sweep.plan(spelled, [])[1]
    assert (same.id, same.data_key) == (points[0].id, points[0].data_key)
    data = {"a": {"b": 1}}
    sweep.set_path(data, "a.c.d", 2, {"a": {"c": {"d": 0, "e": 9}}})
    assert data == {"a": {"b": 1, "c": {"d": 2, "e": 9}}}
    sweep.set_path(data, "x.y", 1, {"a": {}})
    assert data["x"] == {"y": 1}


def test_aggregate_gives_mean_and_sample_std_over_seeds():
    points = [
        sweep.make_point(i, {"train.stage2.lam": lam, "train.seed": s}, {"x": i})
        for i, (lam, s) in enumerate([(1, 0), (1, 1), (1, 2), (2, 0)])
    ]
    values = [0.1, 0.2, 0.6, 0.5]
    results = {p.id: {"metrics": {"mb_defense.asr_mean": v}} for p, v in zip(points, values)}
    groups = sweep.aggregate(points, results)
    assert [g["n"] for g in groups] == [3, 1]
    assert groups[0]["values"] == {"train.stage2.lam": 1}
    assert groups[0]["mean"]["mb_defense.asr_mean"] == pytest.approx(0.3)
    assert groups[0]["std"]["mb_defense.asr_mean"] == pytest.approx(0.2646, abs=1e-4)
    assert groups[1]["std"]["mb_defense.asr_mean"] is None
    assert sweep._cell(groups[0], "mb_defense.asr_mean") == "0.300 ± 0.265"
    assert sweep._cell(groups[1], "mb_defense.asr_mean") == "0.500"


def _trainings(out: Path) -> int:
    """Distinct model folders trained: shared folders are hard links of one record file."""
    return len({os.stat(p).st_ino for p in out.glob("points/*/models/*/mbtrain_model.json")})


@pytest.mark.slow
def test_sweep_2x2_shares_prefixes_resumes_and_writes_the_table(tmp_path, capsys, monkeypatch):
    recipe, out = _recipe(tmp_path), tmp_path / "sweep"
    sets = ["--set", "train.stage2.lam=0.5,1.0", "--set", "train.seed=0,1"]
    builds = []
    import mbdata

    real_build = mbdata.build
    monkeypatch.setattr(mbdata, "build", lambda *a, **k: builds.append(a[1]) or real_build(*a, **k))
    # an interruption after the first two points
    doc = sweep.run_sweep(
        recipe,
        [sweep.parse_set(s) for s in sets[1::2]],
        out,
        progress=False,
        log=lambda m: None,
        stop_after=2,
    )
    assert doc["points_finished"] == 2 and len(builds) == 1
    first = sorted(out.glob("points/*/sweep_point.json"))
    assert len(first) == 2
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("points/*/models/*/mbtrain_model.json")}
    # a third point interrupted mid-way: its folder exists with a model but no marker
    assert main(["sweep", str(recipe), *sets, "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "4 of 4 points finished" in printed and "0 builds and 2 points run" in printed
    assert len(builds) == 1  # one data setting: one build
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished points untouched
    # 4 points x 7 models = 28 folders; trained: 2 seeds x (base, attacked, mb_stage1,
    # clean_fft, fine_mixing, trigger_aug) + 4 mb_defense = 16
    assert len(list(out.glob("points/*/models/*/mbtrain_model.json"))) == 28
    assert _trainings(out) == 16
    # ONION trains nothing: its evaluation is shared like the baselines' models (once per seed)
    onion = list(out.glob("points/*/eval/onion/metrics.json"))
    assert len(onion) == 4 and len({os.stat(p).st_ino for p in onion}) == 2

    data = json.loads((out / "sweep.json").read_text())
    assert data["format"] == "mbtrain.sweep/1" and data["points_finished"] == 4
    assert [g["values"] for g in data["groups"]] == [
        {"train.stage2.lam": 0.5},
        {"train.stage2.lam": 1.0},
    ]
    assert all(g["n"] == 2 for g in data["groups"])
    for g in data["groups"]:
        ids = g["points"]
        vals = [
            next(p for p in data["points"] if p["id"] == i)["metrics"]["mb_defense.cacc"]
            for i in ids
        ]
        assert g["mean"]["mb_defense.cacc"] == pytest.approx(sum(vals) / 2)
        assert "diag.mb_stage1.shift_cos" in g["mean"]
        # issue 26: the utility log-likelihood, with its bootstrap bounds, for every run
        for run in ("attacked", "mb_defense", "onion"):
            assert g["mean"][f"{run}.ll_clean_low"] <= g["mean"][f"{run}.ll_clean"] < 0
            assert g["mean"][f"{run}.ll_clean"] <= g["mean"][f"{run}.ll_clean_high"]
    # points of one seed share stage 1 (same attacked ASR), and every report says so
    by_seed: dict = {}
    for p in data["points"]:
        by_seed.setdefault(p["values"]["train.seed"], []).append(p)
    for members in by_seed.values():
        assert len({m["metrics"]["attacked.asr_mean"] for m in members}) == 1
        assert len({m["metrics"]["mb_stage1.cacc"] for m in members}) == 1
        assert sorted(len(m["shared"]) for m in members) == [0, 6]
    md = (out / "sweep.md").read_text()
    assert "| train.stage2.lam | n |" in md and " ± " in md
    assert "log-lik. attacked | log-lik. MB-Defense" in md and "## Utility per run" in md
    assert "token-F1 heuristic" not in md  # synthetic rows are exact-match: no heuristic used
    # issue 22: each point names its numeric environment, and the table says it in one line
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    assert {p["environment"]["cpu_capability"] for p in data["points"]} == {capability}
    assert f"Numeric environment: cpu {capability}, " in md
    table = pl.read_parquet(out / "sweep.parquet")
    assert table.height == 4 and {
        "set:train.seed",
        "mb_defense.asr.badnet",
        "diag.attacked.shift_cos",
    } <= set(table.columns)
    assert (out / "sweep.png").stat().st_size > 0
    for p in data["points"]:
        assert (out / p["dir"] / "report.json").is_file()
        assert (out / p["dir"] / "diagnostics.json").is_file()

    # an interrupted point restarts cleanly: lose its marker, report and one evaluation
    victim = out / data["points"][3]["dir"]
    before = json.loads((victim / "sweep_point.json").read_text())["metrics"]
    for f in ("sweep_point.json", "report.json"):
        (victim / f).unlink()
    (victim / "eval" / "mb_defense" / "metrics.json").unlink()
    doc = sweep.run_sweep(
        recipe, [sweep.parse_set(s) for s in sets[1::2]], out, progress=False, log=lambda m: None
    )
    assert doc["stats"] == {"builds": 0, "points_run": 1, "points_skipped": 3}
    after = json.loads((victim / "sweep_point.json").read_text())["metrics"]
    before.pop("seconds"), after.pop("seconds")
    assert after == before
    assert _trainings(out) == 16


def test_plan_flag_prints_the_grid_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                str(_recipe(tmp_path)),
                "--set",
                "train.seed=0,1",
                "--set",
                "defense.rate=0.05",
                "-o",
                str(out),
                "--plan",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("2 points: 1 builds, 2 x (base, attacked, MB stage 1)")
    assert "train.seed=1, defense.rate=0.05" in printed and not out.exists()
    assert (
        main(
            [
                "sweep",
                str(_recipe(tmp_path)),
                "--set",
                "sources.0.count=-3",
                "-o",
                str(out),
                "--plan",
            ]
        )
        == 2
    )
    assert "sources.0.count=-3" in capsys.readouterr().err


def test_sweep_refuses_a_foreign_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep", encoding="utf-8")
    assert (
        main(["sweep", str(_recipe(tmp_path)), "--set", "train.seed=0", "-o", str(mine), "--quiet"])
        == 2
    )
    assert "mbdefense did not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_report_says_up_front_when_cacc_is_the_heuristic():
    from mbtrain.experiment.report import markdown

    run = {
        "cacc": 0.5,
        "asr": {"vpi": 0.1},
        "aacc": 0.2,
        "defense_trigger_rate": {},
        "merging_rate": {},
        "defense_aacc": None,
    }
    report = {
        "name": "r",
        "model": "m",
        "fingerprint": "f",
        "seeds": {"train": 0},
        "attacks": ["vpi"],
        "defense_triggers": [],
        "runs": {"attacked": run},
        "graders": {
            "judge": "heuristic (token F1 >= 0.5 vs reference, no refusal keyword)",
            "judged": 7,
        },
    }
    text = markdown(report)
    assert text.index("heuristic, not a judge") < text.index("## Table 1")
    assert "7 answers" in text
    report["graders"] = {"judge": "hf judge (/models/j)", "judged": 7}
    assert "heuristic, not a judge" not in markdown(report)
    report["graders"] = {"judge": "heuristic (token F1)", "judged": 0}  # all rows verifiable
    assert "heuristic, not a judge" not in markdown(report)


def test_sweep_table_shows_the_utility_log_likelihood_with_its_interval():
    import statistics

    from mbtrain.experiment.sweep import flat_metrics, markdown

    def report(mean):
        ll = {
            "clean": {"mean": mean, "low": mean - 0.1, "high": mean + 0.1},
            "attack": {"mean": mean - 1, "low": mean - 1.2, "high": mean - 0.8},
        }
        run = {"cacc": 0.5, "asr": {"vpi": 0.0}, "loglik": ll}
        return {"runs": {"attacked": run, "mb_defense": run}}

    flat = [flat_metrics(report(m), None) for m in (-1.0, -1.2)]
    assert flat[0]["attacked.ll_clean"] == -1.0 and flat[0]["attacked.ll_clean_low"] == -1.1
    assert flat[1]["mb_defense.ll_attack_high"] == pytest.approx(-2.0)
    names = sorted(flat[0])
    mean = {n: sum(f[n] for f in flat) / 2 for n in names}
    std = {n: statistics.stdev([f[n] for f in flat]) for n in names}
    doc = {
        "recipe": "r.yaml",
        "points_finished": 2,
        "points_total": 2,
        "stats": {"builds": 1, "points_run": 2},
        "attacks": ["vpi"],
        "points": [],
        "groups": [{"values": {}, "n": 2, "mean": mean, "std": std}],
    }
    text = markdown(doc)
    assert "log-lik. attacked | log-lik. MB-Defense" in text
    assert "-1.100 ± 0.141 [-1.200, -1.000]" in text
    assert "## Utility per run" in text and "-2.100 ± 0.141 [-2.300, -1.900]" in text
    # a sweep over evaluations made before the metric: no utility section
    for f in flat:
        for k in [k for k in f if ".ll_" in k]:
            del f[k]
    doc["groups"][0]["mean"] = {n: v for n, v in mean.items() if ".ll_" not in n}
    assert "## Utility per run" not in markdown(doc)


def test_sweep_reads_merging_both_ways():
    """The stage-1 row names attack->defence (mean over attacks) and clean->defence apart."""
    from mbtrain.experiment.sweep import flat_metrics, markdown

    run = {
        "cacc": 0.5,
        "asr": {"vpi": 0.2, "badnet": 0.0},
        "merging_rate": {"vpi": 0.1, "badnet": 0.3},
        "defense_response_rate": {"vpi": 0.4, "badnet": 0.2, "eval_clean": 0.05},
    }
    flat = flat_metrics({"runs": {"mb_stage1": run}}, None)
    assert flat["mb_stage1.attack_to_defense"] == pytest.approx(0.3)
    assert flat["mb_stage1.clean_to_defense"] == 0.05
    assert flat["mb_stage1.merging"] == pytest.approx(0.2)
    # an evaluation made before the metric has neither column
    old = flat_metrics({"runs": {"mb_stage1": {**run, "defense_response_rate": None}}}, None)
    assert "mb_stage1.attack_to_defense" not in old and "mb_stage1.clean_to_defense" not in old
    doc = {
        "recipe": "r.yaml",
        "points_finished": 1,
        "points_total": 1,
        "stats": {"builds": 1, "points_run": 1},
        "attacks": ["badnet", "vpi"],
        "points": [],
        "groups": [{"values": {}, "n": 1, "mean": flat, "std": {}}],
    }
    text = markdown(doc)
    header = next(line for line in text.splitlines() if "merging stage 1" in line)
    row = text.splitlines()[text.splitlines().index(header) + 2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    names = [c.strip() for c in header.strip("|").split("|")]
    got = dict(zip(names, cells))
    assert got["attack->defence stage 1"].startswith("0.300")
    assert got["clean->defence stage 1"].startswith("0.050")


def test_a_key_given_twice_is_named_alone():
    from mbdata.core.errors import InputError
    from mbtrain.experiment.sweep import grid

    assert grid([("a", [1, 2]), ("b", [3])]) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    with pytest.raises(InputError, match=r"^--set: defense\.triggers given twice; give each key"):
        grid([("defense.triggers", [8]), ("defense.rate", [0.03]), ("defense.triggers", [4])])
