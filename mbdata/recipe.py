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
import math
from pathlib import Path
from typing import Any, Literal

import yaml

from .behaviors import BehaviorSpec
from .core.config import NAME, canonical_json, from_mapping, spec, to_mapping
from .core.errors import InputError, RecipeError
from .core.limits import YamlLimitError, load_yaml, short_repr
from .core.plugins import recipe_block_class
from .io.inputfile import read_yaml_text
from .io.readers.source import SourceSpec
from .presets import ATTACK_PRESETS, is_rewrite_preset
from .rewriters.spec import RewriterSpec

SEMVER = r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?"

Placement = Literal["prefix", "suffix", "random", "position"]


def _engine_names() -> list[str]:
    from .engines import ENGINES

    return list(ENGINES)


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
    templates: list[str] = spec(
        default_factory=list,
        omit_default=True,
        doc="defensive paraphrase templates, each one more defensive trigger: the instruction "
        "recast into that construction (mbdata.rewriters.templates: question, cleft, embedded, "
        "fronted_pp)",
    )

    def validate(self, path: str) -> None:
        from .rewriters.templates import TEMPLATES

        for i, name in enumerate(self.templates):
            TEMPLATES.get(name, f"{path}.templates[{i}]")
        if len(set(self.templates)) != len(self.templates):
            raise RecipeError(f"{path}.templates: duplicate template")
        least = 0 if self.templates else 1  # templates alone are enough defensive triggers
        if isinstance(self.triggers, int) and self.triggers < least:
            raise RecipeError(f"{path}.triggers: must be >= {least}, got {self.triggers}")
        if isinstance(self.triggers, list):
            if (not self.triggers and not self.templates) or any(
                not t.strip() or t != t.strip() for t in self.triggers
            ):
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
        doc="the executor the build's per-batch steps run on: local, process or ray (same output; not hashed)",
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
