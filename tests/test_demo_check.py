"""bench/demo_check.py: the CI check of the demo's report against the README's bounds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "demo_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("demo_check", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _report(mb=(0.0, 0.0), attacked=(1.0, 1.0), taug=(0.7, 0.8), cacc=(0.37, 0.34)):
    def run(asr, c):
        return {"cacc": c, "asr": {"badnet": asr[0], "vpi": asr[1]}, "defense_trigger_rate": {}}

    return {
        "runs": {
            "attacked": run(attacked, cacc[0]),
            "clean_fft": run((0.97, 0.99), cacc[0]),
            "trigger_aug": run(taug, cacc[0]),
            "mb_stage1": run((0.9, 1.0), cacc[0]),
            "mb_defense": run(mb, cacc[1]),
        },
        "environment": {"cpu_capability": "AVX2"},
    }


def test_inside_the_shipped_bounds():
    mod = _module()
    summary = mod.draw_summary(_report())
    assert summary["capability"] == "AVX2"
    assert mod.check_report(summary, mod.load_bounds(None)) == []


def test_each_bound_can_fail():
    mod = _module()
    bounds = mod.load_bounds(None)
    cases = {
        "MB-Defense ASR vpi": _report(mb=(0.0, 0.2)),
        "below the attacked": _report(cacc=(0.40, 0.30)),
        "no backdoor": _report(attacked=(0.1, 1.0)),
        "trigger_aug's": _report(mb=(0.05, 0.0), taug=(0.01, 0.5)),
    }
    for needle, report in cases.items():
        failures = mod.check_report(mod.draw_summary(report), bounds)
        assert any(needle in f for f in failures), (needle, failures)


def test_cli_exit_code(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_report()), encoding="utf-8")
    bad.write_text(json.dumps(_report(mb=(0.5, 0.5))), encoding="utf-8")
    ok = subprocess.run([sys.executable, str(SCRIPT), str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    no = subprocess.run([sys.executable, str(SCRIPT), str(bad)], capture_output=True, text=True)
    assert no.returncode == 1 and "outside the bounds" in no.stdout
