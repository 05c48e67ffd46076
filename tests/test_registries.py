"""One authority per list: a registry entry is all it takes to appear in validation, CLI and docs."""

from __future__ import annotations

import pytest
import yaml
from conftest import small_recipe

import mbdata
from cli.main import main
from mbdata.io.exporters import EXPORTERS
from mbdata.presets import ATTACK_PRESETS, AttackPreset
from mbdata.recipe import parse_recipe
from mbdata.recipe_docs import render


@pytest.fixture
def extra_preset():
    ATTACK_PRESETS.register("zz_test", AttackPreset(("zzword",), "prefix", "one", "a test preset"))
    yield "zz_test"
    ATTACK_PRESETS.unregister("zz_test")


def test_a_registered_preset_is_seen_by_validation_cli_and_docs(extra_preset, tmp_path, capsys):
    recipe = small_recipe(attacks=[{"preset": extra_preset, "rate": 0.05}])
    assert parse_recipe(recipe).attacks[0].preset == extra_preset
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["recipe", "validate", str(path)]) == 0
    assert "zz_test (a test preset)" in render()
    assert "'zz_test'" in render()
    capsys.readouterr()
    assert main(["recipe", "docs"]) == 0  # the generated reference, as the CLI prints it
    assert "zz_test (a test preset)" in capsys.readouterr().out
    # and a build uses it: the preset's trigger is what the attack inserts
    out = main(["build", str(path), "-o", str(tmp_path / "b"), "--quiet"])
    assert out == 0
    attacked = [
        r
        for r in mbdata.open_build(tmp_path / "b").table("train").to_pylist()
        if r["role"] == "attack"
    ]
    assert attacked and all(r["instruction"].startswith("zzword") for r in attacked)


def test_the_preset_is_gone_once_unregistered(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(small_recipe(attacks=[{"preset": "zz_test"}])))
    assert main(["recipe", "validate", str(path)]) == 2
    assert "unknown attack preset 'zz_test'" in capsys.readouterr().err


def test_export_format_choice_is_the_registry_case_insensitive(tmp_path, capsys):
    calls = []

    @EXPORTERS.add("zz_fmt")
    def _export(build, out, splits):  # pragma: no cover - signature as the registry expects
        calls.append(out)

    try:
        assert main(["export", "--help"]) == 0
        assert "zz_fmt" in capsys.readouterr().out
        # a typo: the registry's message, the closest name
        assert main(["export", str(tmp_path), "--format", "TRLL"]) != 0
        err = capsys.readouterr().err
        assert "unknown export format 'TRLL'" in err and "did you mean 'trl'" in err
    finally:
        EXPORTERS.unregister("zz_fmt")


def test_upper_case_format_is_accepted_before_the_build_is_read(tmp_path, capsys):
    # 'TRL' passes the option check; what fails is the missing build, not the format.
    code = main(["export", str(tmp_path / "missing"), "--format", "TRL"])
    err = capsys.readouterr().err
    assert code == 2 and "Invalid value" not in err
    assert "missing" in err and len(err.strip().splitlines()) == 1


def test_a_registered_audit_signal_validates_and_runs():
    """docs/extending.md's audit-signal example, as written there."""
    from test_audit_corpus import clean_rows, table

    from mbdata.audit import AuditConfig, audit_table
    from mbdata.audit.signals import SIGNALS, Signal, SignalResult
    from mbdata.core.config import from_mapping
    from mbdata.core.errors import RecipeError

    seen = []

    @SIGNALS.add("zz-signal")
    class MySignal(Signal):
        name = "zz-signal"

        def score(self, context):
            seen.append(context.corpus.n_rows)
            return SignalResult.empty(context.corpus.n_rows)

    try:
        config = from_mapping(AuditConfig, {"signals": ["zz-signal"]}, "audit")
        result = audit_table(table(clean_rows(60, seed=0)), config)
        assert seen == [60] and result.candidates == []
    finally:
        SIGNALS.unregister("zz-signal")
    with pytest.raises(RecipeError, match="unknown audit signal 'zz-signal'"):
        from_mapping(AuditConfig, {"signals": ["zz-signal"]}, "audit")
