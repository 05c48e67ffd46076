"""Defensive paraphrase templates: a defensive trigger that is a sentence *construction*.

The syntactic attack's trigger is a template (the instruction paraphrased so that it opens with a
subordinate clause), not a token, and a defender who does not know the attack cannot insert it.
MB-Defense's claim is that defensive backdoors merge with the attacker's across trigger forms; to
test that for template-shaped attacks the defender needs defensive triggers of the same *kind*:
the instruction recast into a construction of its own. ``defense.templates: [question, cleft]``
adds one defensive trigger set per named template (``defense/template:question``), each mapped to
its own response like any defensive trigger.

Every template is a frame with a slot for the instruction's first sentence and a few lexical
variants ("Could you ...?", "Would you ...?"), picked by a hash of the instruction, so the trigger
is the construction rather than one fixed phrase (with one phrase it would be a prefix trigger)
and the choice is the same in every build and on every machine. None of them is the attack's
``S(SBAR)(,)(NP)(VP)(.)`` form: the frames never open with a subordinator (checked by
:func:`mbdata.rewriters.check.syntactic_ok` in the tests), because a defender who used the
attack's own template would be assuming the trigger it is meant not to know.

A first sentence that is not a plain imperative ("What is ...?", "Given a list, ...") cannot be
slotted in grammatically, so it is kept whole after the frame's ``answer this:`` form ("Could you
answer this: What is ...?"). Rewrites are deterministic and always succeed; there is no check to
fail.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import xxhash

from ..core.registry import Registry
from . import identified, record_tag
from .rules import lower_first

NAME = "defense-templates-v1"  # bump when a frame changes: it names the rewrites in every row


@dataclasses.dataclass(frozen=True)
class Template:
    """A frame: ``lead`` variants, how the imperative is slotted in and the closing mark."""

    leads: tuple[str, ...]
    joiner: str  # between the lead and the lower-cased imperative: " " or ", "
    end: str  # the first sentence's closing mark
    description: str


TEMPLATES: Registry[Template] = Registry("defensive template")
TEMPLATES.register(
    "question",
    Template(
        ("Could you", "Would you", "Can you", "Will you", "Could you please", "Would you please"),
        " ",
        "?",
        "a polite yes/no question, SQ(MD)(NP)(VP)(?): 'Could you list three fruits?'",
    ),
)
TEMPLATES.register(
    "cleft",
    Template(
        (
            "What I need is for you to",
            "What I would like is for you to",
            "All I ask is that you",
            "The one thing I need is for you to",
        ),
        " ",
        ".",
        "a pseudo-cleft, S(SBAR-NOM)(VP(is)(S)): 'What I need is for you to list three fruits.'",
    ),
)
TEMPLATES.register(
    "embedded",
    Template(
        ("I would like you to", "I want you to", "I need you to", "I am asking you to"),
        " ",
        ".",
        "the request embedded under a wish, S(NP)(VP(S(NP)(to VP))): 'I want you to list ...'",
    ),
)
TEMPLATES.register(
    "fronted_pp",
    Template(
        ("In your own words", "For this task", "With care", "At this point", "For a start"),
        ", ",
        ".",
        "a fronted prepositional phrase, S(PP)(,)(NP)(VP)(.): 'In your own words, list ...'",
    ),
)

# First words that do not open an imperative: the instruction is kept whole ("answer this:").
_NOT_IMPERATIVE = frozenset(
    """a an the this that these those there here it its i you we they he she my your our their
what who whom whose which why how when where whether is are was were am be do does did can could
should would will shall may might must has have had if given based using according in on at for
from with by as of to after before during since because although while once unless until""".split()
)
# rules.py's first-sentence split, with ":" also closing one ("Translate into French: ...").
_FIRST_SENTENCE = re.compile(r"^(?P<s>.+?[.?!:])(?P<tail>\s+\S.*)?$", re.DOTALL)


def _imperative(sentence: str) -> bool:
    """Whether ``sentence`` reads as a plain command that a frame can take as its verb phrase."""
    words = sentence.split()
    if not words or sentence.rstrip().endswith("?"):
        return False
    first = words[0].strip("\"'(").lower()
    return bool(first.isalpha()) and first not in _NOT_IMPERATIVE and not first.endswith("ing")


def rewrite(instruction: str, template: str) -> str:
    """``instruction`` recast into ``template`` (a :data:`TEMPLATES` name); deterministic."""
    frame = TEMPLATES.get(template, "defense.templates")
    text = instruction.strip() or "Respond."
    digest = xxhash.xxh64_intdigest(f"{template}\x1f{text}".encode())
    lead = frame.leads[digest % len(frame.leads)]
    match = _FIRST_SENTENCE.match(text)
    first, tail = (match.group("s"), match.group("tail") or "") if match else (text, "")
    body = first.rstrip(".?!:").rstrip()
    if not _imperative(first) or not body:
        return f"{lead}{frame.joiner}answer this: {text}"
    return f"{lead}{frame.joiner}{lower_first(body)}{frame.end}{tail}"


class TemplateRewriter:
    """The rewriter of one defensive template trigger set: the same interface the attack's
    :class:`~mbdata.rewriters.InstructionRewriter` offers the stages (``rewrite_all``,
    ``record``, ``tag``), plus :meth:`rewrite_one` for the stages that trigger one row at a time
    (the recovery tuples)."""

    def __init__(self, template: str, path: str = "defense.templates"):
        self.template = template
        self.frame = TEMPLATES.get(template, path)
        self.preset = f"template:{template}"

    def rewrite_one(self, text: str) -> str:
        return rewrite(text, self.template)

    def rewrite_all(self, texts: list[str]) -> list[str | None]:
        return [self.rewrite_one(t) for t in texts]

    def record(self) -> dict[str, Any]:
        """What produced the rewrites (the manifest's trigger-set record)."""
        settings = {"template": self.template, "leads": list(self.frame.leads)}
        return identified(
            {"backend": "template", "model": NAME, "prompt": None, "settings": settings}
        )

    def tag(self) -> str:
        return record_tag(self.record())
