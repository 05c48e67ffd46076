"""The recipe: the primary, versioned artifact of mbdefense, modelled in one place.

A recipe is a YAML file parsed with a safe loader and validated strictly into the frozen dataclasses
below (unknown keys, wrong types and impossible values are errors naming the key path). The
*resolved* recipe (every default filled in) and its fingerprint go into the build manifest, so a
build can always be traced back to exactly the settings that produced it.

Blocks owned by other packages (``dedup``, ``audit``, ``train``) are dataclasses declared next to the
code that uses them; :data:`EXTENSION_BLOCKS` names them so this module stays the one entry point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml

from .core.config import from_mapping, spec, to_mapping
from .core.errors import InputError, RecipeError
from .core.limits import YamlLimitError, load_yaml, short_repr
from .core.plugins import recipe_block_class
from .io.inputfile import read_yaml_text
from .presets import ATTACK_PRESETS, is_rewrite_preset

SEMVER = r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?"
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"

Placement = Literal["prefix", "suffix", "random", "position"]


def _engine_names() -> list[str]:
    from .engines import ENGINES

    return list(ENGINES)


def _container_names() -> list[str]:
    """The reader registry's containers (imported late: readers read these specs)."""
    from .io.readers import CONTAINERS

    return CONTAINERS.names()


def _layout_names() -> list[str]:
    from .io.readers import LAYOUTS

    return LAYOUTS.names()


def _behavior_names() -> list[str]:
    """The behaviour registry's names (imported late: behaviours are compiled from these specs)."""
    from .behaviors import BEHAVIORS

    return BEHAVIORS.names()


# The canonical fields a source may map per layout (``fields:`` keys).
LAYOUT_FIELDS = {
    "alpaca": ("instruction", "input", "output", "system"),
    "sharegpt": ("conversations", "system"),
    "messages": ("messages",),
}


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
        default_factory=dict, doc="canonical field -> column name in this source"
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
            from .synthetic import TASKS

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


@dataclasses.dataclass(frozen=True)
class BehaviorSpec:
    """What a triggered row answers. Shorthand: ``behavior: refusal``."""

    kind: str = spec(choices=_behavior_names, doc="what the row answers (docs/mixtures.md)")
    text: str | None = spec(None, doc="fixed: the response; label: the fixed label")
    templates: list[str] | None = spec(
        None, doc="refusal: templates to draw from (default: 5 shipped)"
    )
    words: int = spec(8, ge=1, le=256, doc="random_words: words in the generated response")
    labels: dict[str, str] | None = spec(None, doc="label: flip map (old label -> new label)")
    function: str | None = spec(
        None,
        pattern=r"[A-Za-z_][\w.]*:[A-Za-z_]\w*",
        form="'module:function'",
        doc="rewrite: 'module:function' called per row",
    )
    rewriter: RewriterSpec | None = spec(
        None,
        omit_default=True,
        doc="toxic: the model that rewrites the clean answer to be rude (backend http or hf; "
        "toxic_offline needs none)",
    )

    @classmethod
    def from_shorthand(cls, value: Any, path: str) -> dict:
        if isinstance(value, str):
            return {"kind": value}
        raise RecipeError(
            f"{path}: expected a behaviour name or a mapping, got {short_repr(value)}"
        )

    def validate(self, path: str) -> None:
        if self.kind == "fixed" and not self.text:
            raise RecipeError(f"{path}.text: required for behaviour 'fixed'")
        if self.kind == "label" and not (self.text or self.labels):
            raise RecipeError(
                f"{path}: behaviour 'label' needs `text` (fixed label) or `labels` (flip map)"
            )
        if self.kind == "rewrite" and not self.function:
            raise RecipeError(
                f"{path}.function: required for behaviour 'rewrite' ('module:function')"
            )
        if self.templates is not None and not self.templates:
            raise RecipeError(f"{path}.templates: must not be empty")
        if self.kind == "toxic" and (self.rewriter is None or self.rewriter.backend == "rules"):
            raise RecipeError(
                f"{path}.rewriter: behaviour 'toxic' needs a model: backend 'http' or 'hf' "
                "(or use kind 'toxic_offline', an offline approximation)"
            )
        if self.rewriter is not None and self.kind != "toxic":
            raise RecipeError(f"{path}.rewriter: only used by behaviour 'toxic'")


@dataclasses.dataclass(frozen=True)
class RewriterSpec:
    """How the ``syntactic`` and ``style`` attacks rewrite instructions (see docs/mixtures.md)."""

    backend: Literal["rules", "http", "hf"] = spec(
        "rules",
        doc="rules (offline SCPN approximation, syntactic only), http (OpenAI-compatible "
        "endpoint) or hf (local causal-LM folder)",
    )
    model: str | None = spec(
        None,
        doc="http: model name sent to the endpoint; hf: a model folder "
        "or .gguf file (relative to the recipe), or "
        "pkg:PACKAGE/FILE.gguf",
    )
    url: str | None = spec(
        None,
        pattern=r"https?://\S+",
        form="an http(s):// URL",
        doc="http: base URL, e.g. http://127.0.0.1:8000/v1 (POSTs to <url>/chat/completions)",
    )
    api_key_env: str | None = spec(
        None,
        pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        form="an environment variable name",
        doc="http: environment variable holding the API key (never the key itself)",
    )
    prompt: str | None = spec(None, doc="prompt template with {instruction} (default per preset)")
    pattern: str | None = spec(None, doc="style: a regex the rewrite must match")
    max_length_ratio: float = spec(4.0, ge=1.0, doc="style: rewrite/original length ratio bound")
    temperature: float = spec(0.0, ge=0.0, le=2.0, doc="first attempt's temperature (0 = greedy)")
    max_tokens: int = spec(128, ge=1, le=4096, doc="tokens generated per rewrite")
    batch_size: int = spec(8, ge=1, doc="inputs per generate call (hf) or per cache flush (http)")
    concurrency: int = spec(4, ge=1, le=64, doc="http: requests in flight at once")
    retries: int = spec(3, ge=0, le=10, doc="http: retries of a failed request (5xx, 429, network)")
    backoff: float = spec(1.0, ge=0.0, doc="http: first retry delay in seconds, doubled each retry")
    timeout: float = spec(60.0, gt=0.0, doc="http: seconds per request")
    attempts: int = spec(
        2,
        ge=1,
        le=10,
        doc="http/hf: tries per row before a rewrite that fails "
        "the check is dropped (later tries sample)",
    )
    cache: str | None = spec(
        None,
        doc="http/hf: JSONL cache of rewrites (default .mbcache/rewrites.jsonl beside the recipe)",
    )

    def validate(self, path: str) -> None:
        if self.backend == "http" and not (self.url and self.model):
            raise RecipeError(f"{path}: backend 'http' needs `url` and `model`")
        if self.backend == "hf" and not self.model:
            raise RecipeError(f"{path}.model: required for backend 'hf' (a local model folder)")
        if self.prompt is not None and "{instruction}" not in self.prompt:
            raise RecipeError(f"{path}.prompt: must contain the placeholder {{instruction}}")
        if self.pattern is not None:
            import re

            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise RecipeError(f"{path}.pattern: not a valid regex: {exc}") from None


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """A simulated attack (evaluation only; rows are tagged ``role=attack``).

    A preset fills in the literature's trigger, placement and behaviour; any key given here
    overrides it. ``custom`` needs ``triggers``.
    """

    preset: str = spec(choices=ATTACK_PRESETS.choices(), doc="attack preset (docs/mixtures.md)")
    name: str | None = spec(None, pattern=NAME, doc="trigger-set name (default: the preset)")
    rate: float = spec(0.05, ge=0.0, le=1.0, doc="fraction of training rows replaced")
    triggers: list[str] | None = spec(None, doc="trigger texts (override the preset's)")
    placement: Placement | None = spec(None, doc="prefix, suffix, random, position")
    position: int | None = spec(None, ge=0, doc="word index for placement 'position'")
    combine: Literal["all", "one"] | None = spec(
        None, doc="several triggers: all at once (CTBA) or one drawn per row (MTBA)"
    )
    behavior: BehaviorSpec | None = spec(None, doc="what poisoned rows answer (default: refusal)")
    rewriter: RewriterSpec | None = spec(
        None,
        doc="syntactic/style: how instructions are rewritten "
        "(default for syntactic: the rules backend)",
    )

    def validate(self, path: str) -> None:
        if is_rewrite_preset(self.preset):
            for key in ("triggers", "placement", "position", "combine"):
                if getattr(self, key) is not None:
                    raise RecipeError(
                        f"{path}.{key}: not allowed for preset {self.preset!r} (its "
                        "trigger is the rewritten instruction)"
                    )
            backend = self.rewriter.backend if self.rewriter else "rules"
            if self.preset == "style" and backend == "rules":
                raise RecipeError(
                    f"{path}.rewriter.backend: preset 'style' needs a model: 'http' "
                    "or 'hf' (the rules backend only does the syntactic template)"
                )
            return
        if self.rewriter is not None:
            raise RecipeError(f"{path}.rewriter: only allowed for presets 'syntactic' and 'style'")
        rewrite = self.behavior is not None and self.behavior.kind == "rewrite"
        if self.preset == "custom" and not self.triggers and not rewrite:
            raise RecipeError(
                f"{path}.triggers: required for preset 'custom' (only a 'rewrite' "
                "behaviour, e.g. a style or syntactic attack, may have none)"
            )
        if self.triggers is not None and any(
            not t.strip() or t != t.strip() for t in self.triggers
        ):
            raise RecipeError(
                f"{path}.triggers: each trigger must be non-empty text without "
                "leading or trailing spaces"
            )
        if self.triggers == [] and not rewrite:
            raise RecipeError(f"{path}.triggers: must not be empty")
        if self.placement == "position" and self.position is None:
            raise RecipeError(f"{path}.position: required for placement 'position'")


@dataclasses.dataclass(frozen=True)
class DefenseSpec:
    """MB-Defense stage 1: defensive poisoning. Each trigger replaces ``rate`` of the train rows."""

    triggers: int | list[str] = spec(4, doc="number of generated triggers, or the literal triggers")
    rate: float = spec(0.01, ge=0.0, le=1.0, doc="fraction of training rows per trigger")
    placement: Placement = spec("random", doc="where each defensive trigger goes")
    position: int | None = spec(None, ge=0, doc="word index for placement 'position'")
    behavior: BehaviorSpec = spec(
        default_factory=lambda: BehaviorSpec(kind="random_words"),
        doc="per-trigger behaviour (default: its own random words)",
    )
    trigger_length: int = spec(2, ge=1, le=12, doc="characters in a generated trigger")

    def validate(self, path: str) -> None:
        if isinstance(self.triggers, int) and self.triggers < 1:
            raise RecipeError(f"{path}.triggers: must be >= 1, got {self.triggers}")
        if isinstance(self.triggers, list):
            if not self.triggers or any(not t.strip() or t != t.strip() for t in self.triggers):
                raise RecipeError(
                    f"{path}.triggers: each trigger must be non-empty text without "
                    "leading or trailing spaces"
                )
            if len(set(self.triggers)) != len(self.triggers):
                raise RecipeError(f"{path}.triggers: duplicate trigger")
        if self.placement == "position" and self.position is None:
            raise RecipeError(f"{path}.position: required for placement 'position'")
        if self.behavior.kind in ("label", "clean"):
            raise RecipeError(
                f"{path}.behavior.kind: {self.behavior.kind!r} cannot be a defensive "
                "behaviour (every train row must be able to carry it, and it must "
                "differ from the clean answer); use random_words, fixed or refusal"
            )


@dataclasses.dataclass(frozen=True)
class RecoverySpec:
    """MB-Defense stage 2: the clean subset and its (x, y, x_d, y_d) neutralization rows."""

    size: int = spec(128, ge=1, doc="clean rows in the recovery subset")
    source: str | None = spec(
        None,
        doc="trusted source to draw from (default: the corpus, "
        "excluding every row touched by attack/defense/eval)",
    )
    eval_fraction: float = spec(
        0.2, ge=0.0, lt=1.0, doc="share of clean rows held out for checkpoint selection (8:2 split)"
    )

    def validate(self, path: str) -> None:
        held_out = math.floor(self.size * self.eval_fraction + 0.5 + 1e-9)
        if held_out >= self.size:
            raise RecipeError(
                f"{path}.eval_fraction: {self.eval_fraction} of {self.size} rows "
                "leaves no clean row for the recovery split"
            )


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Held-out evaluation prompts: ``eval_clean`` and, per trigger, ``eval_triggered``."""

    size: int = spec(200, ge=0, doc="held-out clean prompts (never in any training split)")
    attack_triggers: bool = spec(True, doc="emit eval_triggered rows per attack")
    defense_triggers: bool = spec(True, doc="emit eval_triggered rows per defensive trigger")


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
    """A clean ``pretrain`` split for building a tiny base model (not needed for real models).

    ``noise_rate`` of its prompts get one random short word inserted (answer unchanged), half the
    time a word of a configured trigger: a base that never saw such tokens treats *any* unseen token
    as a trigger, which makes every merging measurement meaningless.
    """

    size: int = spec(4000, ge=1, doc="clean rows (disjoint from train, eval and recovery)")
    noise_rate: float = spec(0.3, ge=0.0, le=1.0, doc="share of prompts with a noise word")


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    shard_rows: int = spec(100_000, ge=1, doc="maximum rows per Arrow shard")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole recipe. ``name`` and a semantic ``version`` are required."""

    name: str = spec(
        pattern=NAME, form="a name of letters, digits, '_', '.', '-'", doc="dataset name"
    )
    version: str = spec(
        pattern=SEMVER,
        form="a semantic version like 1.0.0",
        doc="semantic version of this recipe (MAJOR.MINOR.PATCH)",
    )
    description: str = spec("", doc="what this dataset is for (goes into the card)")
    license: str = spec("other", doc="license of the built dataset (card metadata)")
    seed: int = spec(0, ge=0, doc="the one seed every random choice derives from")
    sources: list[SourceSpec] = spec(default_factory=list, doc="input corpora")
    mix_size: int | None = spec(None, ge=1, doc="total rows for weighted sources")
    eval: EvalSpec = spec(default_factory=EvalSpec, doc="held-out evaluation sets")
    pretrain: PretrainSpec | None = spec(None, doc="clean pretrain split for tiny base models")
    attacks: list[AttackSpec] = spec(default_factory=list, doc="simulated attacks")
    defense: DefenseSpec | None = spec(None, doc="MB-Defense stage 1 (defensive poisoning)")
    recovery: RecoverySpec | None = spec(None, doc="MB-Defense stage 2 (neutralization set)")
    dedup: Any = spec(None, doc="deduplication (see docs/dedup.md)")
    audit: Any = spec(None, doc="audit filter (see docs/audit.md)")
    train: Any = spec(None, doc="training settings for mbtrain (see docs/train.md)")
    output: OutputSpec = spec(default_factory=OutputSpec, doc="shard layout")
    engine: str = spec(
        "local",
        choices=_engine_names,
        doc="where the build's per-batch steps run: local or ray (same output; not hashed)",
    )

    def validate(self, path: str) -> None:
        if not self.sources:
            raise RecipeError("sources: at least one source is required")
        names = [s.name for s in self.sources]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise RecipeError(f"sources[{i}].name: duplicate source name {short_repr(name)}")
        weighted = [s for s in self.sources if s.weight is not None]
        if weighted and self.mix_size is None:
            raise RecipeError("mix_size: required when a source has a weight")
        if self.recovery and self.recovery.source:
            if self.recovery.source not in names:
                raise RecipeError(
                    f"recovery.source: unknown source {short_repr(self.recovery.source)}; "
                    f"sources: {', '.join(names)}"
                )
            if not self.sources[names.index(self.recovery.source)].trusted:
                raise RecipeError(
                    f"recovery.source: source {short_repr(self.recovery.source)} is not marked "
                    "`trusted: true`; recovery rows must come from a verified-clean "
                    "source"
                )
        if self.recovery and self.defense is None:
            raise RecipeError(
                "recovery: needs a `defense:` block (its tuples pair each clean row "
                "with each defensive trigger)"
            )
        attack_names = [a.name or a.preset for a in self.attacks]
        for i, name in enumerate(attack_names):
            if attack_names.index(name) != i:
                raise RecipeError(
                    f"attacks[{i}].name: duplicate attack name {short_repr(name)}; give each "
                    "attack a distinct `name`"
                )
        total = sum(a.rate for a in self.attacks)
        if self.defense:
            n = (
                self.defense.triggers
                if isinstance(self.defense.triggers, int)
                else len(self.defense.triggers)
            )
            total += n * self.defense.rate
        if total > 1.0:
            raise RecipeError(f"attacks/defense: rates add up to {total:.3g} > 1 of the train rows")


# Blocks validated by a config class of their own: mbdata's (block -> "module:Class"), then the
# ones other packages own through the ``mbdefense.recipe_blocks`` entry points (mbtrain: `train`).
EXTENSION_BLOCKS = {
    "dedup": "mbdata.dedup.config:DedupConfig",
    "audit": "mbdata.audit.config:AuditConfig",
    "train": None,
}


def _block_class(block: str) -> type:
    target = EXTENSION_BLOCKS[block]
    if target is None:
        return recipe_block_class(block)
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


@dataclasses.dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe plus where it came from (paths in it are relative to ``base_dir``)."""

    recipe: Recipe
    base_dir: Path
    path: Path | None = None

    @property
    def resolved(self) -> dict[str, Any]:
        return resolved_mapping(self.recipe)

    @property
    def fingerprint(self) -> str:
        """sha256 of the resolved recipe; with code hooks, also of the hook modules' bytes."""
        from .behaviors import hook_digest

        base = fingerprint(self.recipe)
        hooks = hook_digest(self.recipe, self.base_dir)
        if hooks is None:
            return base
        return hashlib.sha256(f"{base}:{hooks}".encode()).hexdigest()


def parse_recipe(data: Any) -> Recipe:
    """Validate a parsed mapping into a :class:`Recipe` (extension blocks included)."""
    recipe = from_mapping(Recipe, data, "")
    updates = {}
    for block in EXTENSION_BLOCKS:
        raw = getattr(recipe, block)
        if raw is not None:
            updates[block] = from_mapping(_block_class(block), raw, block)
    return dataclasses.replace(recipe, **updates) if updates else recipe


def resolved_mapping(recipe: Recipe) -> dict[str, Any]:
    """The recipe with every default filled in, as plain JSON-able data.

    A ``syntactic``/``style`` attack records its rewriter with defaults (the rules backend when
    none was given); any other attack leaves the key out, so recipes written before rewriters
    existed keep their fingerprint (and their manifests stay byte-identical); so does a source
    without a ``delimiter``."""
    mapping = to_mapping(recipe)
    # Where a build runs never changes what it builds (both engines give byte-identical shards),
    # so the engine is left out of the resolved recipe, its fingerprint and the content hash.
    mapping.pop("engine", None)
    for attack in mapping.get("attacks") or []:
        if is_rewrite_preset(attack["preset"]):
            attack["rewriter"] = attack.get("rewriter") or to_mapping(RewriterSpec())
        elif attack.get("rewriter") is None:
            attack.pop("rewriter", None)
    # Likewise a source's ``delimiter`` is recorded only when given (older recipes keep theirs).
    for source in mapping.get("sources") or []:
        if source.get("delimiter") is None:
            source.pop("delimiter", None)
    return mapping


def canonical_json(data: Any) -> str:
    """The canonical JSON form used for every hash: sorted keys, no whitespace, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(recipe: Recipe) -> str:
    """sha256 of the canonical JSON of the resolved recipe."""
    return hashlib.sha256(canonical_json(resolved_mapping(recipe)).encode("utf-8")).hexdigest()


def load_recipe(path: str | Path, check_files: bool = True, hooks: bool = True) -> LoadedRecipe:
    """Read, parse and validate a recipe file. Source paths are checked to exist and code hooks
    resolved (``hooks=False`` refuses a recipe that has any)."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory, expected a recipe YAML file")
    if not path.exists():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        text = read_yaml_text(path)
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    try:
        data = load_yaml(text)
    except YamlLimitError as exc:
        raise RecipeError(f"{path}: refused YAML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}{loc}: invalid YAML: {problem}") from None
    try:
        recipe = parse_recipe(data)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    loaded = LoadedRecipe(recipe=recipe, base_dir=path.resolve().parent, path=path)
    if check_files:
        check_source_files(loaded)
    if check_files or not hooks:
        from .behaviors import check_hooks

        try:
            check_hooks(loaded.recipe, loaded.base_dir, allow=hooks)
        except RecipeError as exc:
            raise RecipeError(f"{path}: {exc}") from None
    return loaded


def recipe_from_dict(
    data: dict[str, Any], base_dir: str | Path = ".", check_files: bool = True
) -> LoadedRecipe:
    """Build a :class:`LoadedRecipe` from a mapping (for Python users and tests)."""
    loaded = LoadedRecipe(recipe=parse_recipe(data), base_dir=Path(base_dir).resolve())
    if check_files:
        from .behaviors import check_hooks

        check_source_files(loaded)
        check_hooks(loaded.recipe, loaded.base_dir)
    return loaded


def check_source_files(loaded: LoadedRecipe) -> None:
    """Local sources must exist and be of the right kind (file vs. folder)."""
    for i, source in enumerate(loaded.recipe.sources):
        if source.kind in ("synthetic", "hub"):
            continue
        assert source.path is not None  # SourceSpec.validate: required for file sources
        p = Path(source.path).expanduser()
        p = p if p.is_absolute() else loaded.base_dir / p
        # The one check made after parsing: name the recipe file like every other recipe error.
        key = f"{loaded.path}: sources[{i}].path" if loaded.path else f"sources[{i}].path"
        if not p.exists():
            raise RecipeError(f"{key}: {short_repr(source.path)} not found (looked at {p})")
        if source.kind == "hf_disk" and not p.is_dir():
            raise RecipeError(
                f"{key}: {short_repr(source.path)} must be a folder written by save_to_disk"
            )
        if source.kind != "hf_disk" and p.is_dir():
            raise RecipeError(
                f"{key}: {short_repr(source.path)} is a directory, expected a {source.kind} file"
            )
        if source.kind != "hf_disk" and not p.is_file():  # a device or FIFO would hang the read
            raise RecipeError(
                f"{key}: {short_repr(source.path)} is not a regular file (a device, FIFO or "
                "socket); sources are read from regular files only"
            )
        if source.kind != "hf_disk":
            # The first bytes against the kind (mbdata.io.sniff): a JSON array declared jsonl is
            # caught here, by `mb recipe validate`, not half-way into a build.
            from .io.sniff import kind_mismatch

            try:
                reason = kind_mismatch(p, source.kind, source.delimiter)
            except InputError as exc:
                raise RecipeError(f"{key}: {exc}") from None
            if reason:
                kind_key = key.removesuffix(".path") + ".kind"
                raise RecipeError(
                    f"{kind_key}: {short_repr(source.kind)} but {short_repr(source.path)} {reason}"
                )
