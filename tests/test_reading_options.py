"""Issue 24 item 2: every command that reads a corpus takes the same reading options (kind,
layout, field mapping, CSV delimiter) from one place, and a reference can name a list element
(MT-bench's ``turns``) or be read as chat turns (its first user turn)."""

from __future__ import annotations

import json
import random

import click
import pytest

import mbdata
from cli.main import cli, main
from mbdata.core.errors import InputError
from mbdata.io.readers import ReadOptions, read_any, read_input

_WORDS = (
    "river stone lantern copper meadow falcon harbor violet engine orchard glacier thimble "
    "cobalt saddle marble pepper canyon ribbon walnut beacon tundra velvet anchor puzzle "
    "cinder maple quartz willow ember fossil ginger hollow jasper kettle lilac mosaic nectar"
).split()
# 40 prompts with no word pair in common: no two are near duplicates of each other
PROMPTS = [
    "Explain " + " ".join(random.Random(i).sample(_WORDS, 9)) + f" number{i}" for i in range(40)
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _messages(prompt: str, answer: str | None = "Sure.") -> dict:
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    return {"messages": turns}


def _dedup(tmp_path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "out"
    code = main(["dedup", *args, "-o", str(out), "--overwrite"])
    return code, (mbdata.open_build(out).manifest if code == 0 else {})


def _stage(manifest: dict, name: str) -> dict:
    return next(s for s in manifest["stages"] if s["name"] == name)


def test_dedup_reads_a_messages_corpus(tmp_path):
    rows = [_messages(p, f"answer {i}") for i, p in enumerate(PROMPTS)] + [_messages(PROMPTS[0])]
    corpus = _jsonl(tmp_path / "chat.jsonl", rows)
    code, manifest = _dedup(tmp_path, str(corpus), "--layout", "messages", "--fields", "prompt")
    assert code == 0
    assert manifest["splits"]["train"]["rows"] == 40  # the repeated first prompt went
    assert manifest["read"] == {"input": {"layout": "messages"}, "reference": {}}


def test_mtbench_reference_by_list_element(tmp_path, capsys):
    """MT-bench's prompts are a `turns` list: `instruction=turns[0]` reads the first one; the bare
    column is one clear error that names the mapping to use."""
    corpus = _jsonl(tmp_path / "in.jsonl", [{"instruction": p, "output": "ok"} for p in PROMPTS])
    bench = [{"question_id": i, "turns": [PROMPTS[i], "Now shorter."]} for i in (3, 7, 11)]
    ref = _jsonl(tmp_path / "mtbench.jsonl", bench)
    code, manifest = _dedup(
        tmp_path, str(corpus), "--reference", str(ref), "--reference-field", "instruction=turns[0]"
    )
    assert code == 0
    assert manifest["splits"]["train"]["rows"] == 37
    assert _stage(manifest, "decontaminate")["dropped"]["contaminated_exact"] == 3
    assert manifest["fields"]["reference"] == {"instruction": "turns[0]"}
    capsys.readouterr()
    code, _ = _dedup(
        tmp_path, str(corpus), "--reference", str(ref), "--reference-field", "instruction=turns"
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "expected a string, got list" in err and "instruction=turns[0]" in err
    assert len(err.strip().splitlines()) == 1


def test_a_reference_read_as_chat_turns_uses_the_first_user_turn(tmp_path):
    corpus = _jsonl(tmp_path / "in.jsonl", [{"instruction": p, "output": "ok"} for p in PROMPTS])
    ref = _jsonl(tmp_path / "ref.jsonl", [_messages(PROMPTS[5], None), _messages(PROMPTS[9])])
    code, manifest = _dedup(
        tmp_path, str(corpus), "--reference", str(ref), "--reference-layout", "messages"
    )
    assert code == 0
    assert manifest["splits"]["train"]["rows"] == 38
    assert manifest["read"]["reference"] == {"layout": "messages"}


def test_list_element_mapping_in_python_and_past_the_end(tmp_path):
    path = _jsonl(
        tmp_path / "t.jsonl",
        [{"turns": ["a", "b"], "output": "x"}, {"turns": ["c"], "output": "y"}],
    )
    last = read_any(path, fields={"instruction": "turns[-1]"})
    assert last.column("instruction").to_pylist() == ["b", "c"]
    # element 1 of a one-turn row is missing: a bad row, named, in a strict read
    with pytest.raises(InputError, match=r"row 1 .*field 'turns\[1\]': missing"):
        read_any(path, fields={"instruction": "turns[1]"})
    lenient = read_any(path, fields={"instruction": "turns[1]"}, lenient=True)
    assert lenient.column("instruction").to_pylist() == ["b", ""]


SEMI = 'instruction;input;output\n"Say ""hi""; twice";;hello\nAdd 1+1;quick;2\nAdd 1+1;quick;2\n'


def test_delimiter_on_audit_and_dedup(tmp_path, capsys):
    path = tmp_path / "semi.csv"
    path.write_text(SEMI, encoding="utf-8")
    code, manifest = _dedup(tmp_path, str(path), "--delimiter", ";", "--no-near")
    assert code == 0 and manifest["splits"]["train"]["rows"] == 2
    assert manifest["read"]["input"] == {"delimiter": ";"}
    audit = ["audit", str(path), "-o", str(tmp_path / "a"), "--delimiter", ";", "--quiet"]
    assert main(audit) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert (summary["rows"], summary["distinct_rows"]) == (3, 2)
    capsys.readouterr()
    # without it the header is one column: a clear error, not a silent misread
    assert main(["audit", str(path), "-o", str(tmp_path / "b"), "--quiet"]) == 2
    assert "'instruction;input;output'" in capsys.readouterr().err


def test_delimiter_errors_name_the_option(tmp_path, capsys):
    corpus = _jsonl(tmp_path / "in.jsonl", [{"instruction": p, "output": "ok"} for p in PROMPTS])
    assert main(["dedup", str(corpus), "-o", str(tmp_path / "o"), "--delimiter", ";"]) == 2
    err = capsys.readouterr().err
    assert "--delimiter is for CSV input" in err and "'jsonl'" in err and "--kind csv" in err
    ref = tmp_path / "ref.tsv"
    ref.write_text("instruction\n" + PROMPTS[0] + "\n", encoding="utf-8")
    args = ["dedup", str(corpus), "-o", str(tmp_path / "o"), "--reference", str(ref)]
    assert main([*args, "--reference-delimiter", ";"]) == 2
    assert "--reference-delimiter is for CSV input" in capsys.readouterr().err
    assert main([*args, "--reference-delimiter", ";;"]) == 2
    assert "--reference-delimiter ';;': expected one character" in capsys.readouterr().err
    # a TSV reference by its extension, and a tab spelt \t for a tab-separated CSV
    code, manifest = _dedup(tmp_path, str(corpus), "--reference", str(ref))
    assert code == 0 and manifest["splits"]["train"]["rows"] == 39
    assert ReadOptions(delimiter="\\t").delimiter == "\t" == ReadOptions(delimiter="tab").delimiter


def test_a_reference_kind_error_names_the_reference_option(tmp_path, capsys):
    corpus = _jsonl(tmp_path / "in.jsonl", [{"instruction": p, "output": "ok"} for p in PROMPTS])
    ref = _jsonl(tmp_path / "ref.txt", [{"instruction": PROMPTS[0]}])
    args = ["dedup", str(corpus), "-o", str(tmp_path / "o"), "--reference", str(ref)]
    assert main(args) == 2
    assert "--reference-kind NAME on the command line" in capsys.readouterr().err
    code, manifest = _dedup(
        tmp_path, str(corpus), "--reference", str(ref), "--reference-kind", "jsonl"
    )
    assert code == 0 and manifest["splits"]["train"]["rows"] == 39


def _options_of(command: click.Command, prefix: str = "") -> dict[str, dict]:
    names = [f"--{prefix}{n}" for n in ("kind", "layout", "field", "delimiter")]
    out = {}
    for param in command.params:
        for name in names:
            if name in param.opts:
                out[name.removeprefix(f"--{prefix}")] = {
                    "type": type(param.type).__name__,
                    "default": param.default,
                    "multiple": param.multiple,
                }
    return out


def test_audit_and_dedup_share_one_definition_of_the_reading_options():
    audit, dedup = cli.commands["audit"], cli.commands["dedup"]
    assert set(_options_of(audit)) == {"kind", "layout", "field", "delimiter"}
    assert _options_of(audit) == _options_of(dedup) == _options_of(dedup, "reference-")
    assert _options_of(audit)["layout"]["type"] == "RegistryChoice"  # the registry's names


def test_layout_choices_come_from_the_registry(tmp_path, capsys):
    corpus = _jsonl(tmp_path / "in.jsonl", [{"instruction": "a", "output": "b"}])
    assert main(["dedup", str(corpus), "-o", str(tmp_path / "o"), "--layout", "mesages"]) == 2
    err = capsys.readouterr().err
    assert "alpaca, messages, sharegpt" in err and "did you mean 'messages'" in err


def test_options_object_or_keywords_not_both(tmp_path):
    path = _jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "b"}])
    assert read_input(path, ReadOptions(layout="alpaca")).table.num_rows == 1
    with pytest.raises(TypeError, match="not both"):
        read_input(path, ReadOptions(), kind="jsonl")
