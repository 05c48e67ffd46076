"""Options whose allowed values are a list kept elsewhere read that list (one authority): mb
dedup's --fields and --shingle take DedupConfig's Literal types, as the recipe's dedup block does."""

from __future__ import annotations

import typing

from cli.main import cli, main
from mbdata.dedup.config import FieldGroup, ShingleKind


def _choices(option: str) -> tuple[str, ...]:
    param = next(p for p in cli.commands["dedup"].params if option in p.opts)
    return tuple(param.type.choices)


def test_dedup_config_choices_come_from_the_config_types():
    assert _choices("--fields") == typing.get_args(FieldGroup)
    assert _choices("--shingle") == typing.get_args(ShingleKind)


def test_a_value_outside_the_config_type_is_refused(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    assert (
        main(["dedup", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o"), "--fields", "x"]) == 2
    )
    assert "'prompt', 'output', 'all'" in capsys.readouterr().err
