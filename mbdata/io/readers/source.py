"""A source spec: one input corpus as a recipe names it and a reader reads it (container ``kind``,
row ``layout``, column ``fields``, ``delimiter``, hub ``split``/``subset``/``revision``, and what the
build takes of it). It lives beside the readers, not in :mod:`mbdata.recipe`, so the readers need
nothing from the recipe module (which imports them for its ``kind:``/``layout:`` choices): no
import cycle. ``mbdata.recipe.SourceSpec`` is the same class."""

from __future__ import annotations

import dataclasses

from ...core.config import NAME, spec
from ...core.errors import RecipeError
from ...core.limits import short_repr
from .registry import CONTAINERS, LAYOUT_FIELDS, LAYOUTS


def _container_names() -> list[str]:
    """The reader registry's containers (the package has registered them all by now)."""
    return CONTAINERS.names()


def _layout_names() -> list[str]:
    return LAYOUTS.names()


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One input corpus. Rows flow: read -> ``limit`` (first N) -> ``sample`` (seeded N) -> mix."""

    name: str = spec(
        pattern=NAME,
        form="a name of letters, digits, '_', '.', '-'",
        doc="unique source name; recorded in each row's `source`",
    )
    kind: str = spec(choices=_container_names, doc="container (the reader registry's names)")
    path: str | None = spec(
        None, doc="file (json/jsonl/parquet/csv/tsv), save_to_disk folder, or hub id"
    )
    layout: str = spec(
        "alpaca", choices=_layout_names, doc="row shape: alpaca, sharegpt (conversations), messages"
    )
    fields: dict[str, str] = spec(
        default_factory=dict,
        doc="canonical field -> column name in this source (`turns[0]`: an element of a list column)",
    )
    delimiter: str | None = spec(
        None, doc="csv: the one-character field separator (default `,`; `;`, `|`, a tab)"
    )
    split: str = spec("train", doc="split to read from hf_disk / hub datasets")
    subset: str | None = spec(None, doc="hub config name")
    revision: str | None = spec(None, doc="hub revision (pin it for reproducible builds)")
    limit: int | None = spec(None, ge=0, doc="keep the first N rows")
    sample: int | None = spec(None, ge=0, doc="keep a seeded random N rows")
    count: int | None = spec(
        None, ge=0, doc="rows this source contributes to the mix (synthetic: rows generated)"
    )
    weight: float | None = spec(None, gt=0, doc="share of `mix_size` (with other weighted sources)")
    tasks: list[str] | None = spec(None, doc="synthetic: task families to generate (default all)")
    trusted: bool = spec(False, doc="verified clean; may serve as the recovery source")
    license: str | None = spec(None, doc="license of this source, for the dataset card")

    def validate(self, path: str) -> None:
        if self.kind == "synthetic":
            if self.count is None:
                raise RecipeError(f"{path}.count: required for kind 'synthetic' (rows to generate)")
            for key in ("path", "limit"):
                if getattr(self, key) is not None:
                    raise RecipeError(f"{path}.{key}: not allowed for kind 'synthetic'")
        else:
            if not self.path:
                raise RecipeError(f"{path}.path: required for kind {self.kind!r}")
            if self.tasks is not None:
                raise RecipeError(f"{path}.tasks: only allowed for kind 'synthetic'")
        if self.kind == "synthetic" and self.tasks is not None:
            from ...synthetic import TASKS

            if not self.tasks:
                raise RecipeError(f"{path}.tasks: must not be empty (leave it out for all tasks)")
            for j, task in enumerate(self.tasks):
                TASKS.get(task, f"{path}.tasks[{j}]")
                if self.tasks.index(task) != j:
                    raise RecipeError(f"{path}.tasks[{j}]: {short_repr(task)} is listed twice")
        if self.delimiter is not None:
            if self.kind != "csv":
                hint = " (a tsv is always tab-separated)" if self.kind == "tsv" else ""
                raise RecipeError(f"{path}.delimiter: only allowed for kind 'csv'{hint}")
            if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
                raise RecipeError(
                    f"{path}.delimiter: must be one character other than a quote or a newline, "
                    f'got {short_repr(self.delimiter)} (a tab is "\\t" in YAML)'
                )
        allowed = LAYOUT_FIELDS[self.layout]
        for key in self.fields:
            if key not in allowed:
                raise RecipeError(
                    f"{path}.fields: unknown field {short_repr(key)} for layout "
                    f"{self.layout!r}; allowed: {', '.join(allowed)}"
                )
        if self.count is not None and self.weight is not None and self.kind != "synthetic":
            raise RecipeError(f"{path}: give either count or weight, not both")
