"""Captions for world clips: templates x synonyms, and the train / held-out splits used for evaluation.

Held out from training (seeded): a set of colour x shape x motion combinations (every colour, shape and
motion still appears in training on its own) and a set of sentence templates (unseen paraphrases). Synonyms
are shared by both splits: an unseen template recombines words the model has seen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from model.train.world import BACKGROUNDS, COLORS, MOTIONS, SHAPES, ClipSpec

COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald", "lime green"),
    "blue": ("blue", "azure", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"),
    "white": ("white", "snowy", "pale white"),
    "magenta": ("magenta", "fuchsia", "pink"),
    "cyan": ("cyan", "turquoise", "aqua"),
    "orange": ("orange", "tangerine", "amber"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block", "tile"),
    "triangle": ("triangle", "wedge", "pyramid"),
}
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("moving left", "sliding to the left", "drifting leftwards", "heading left", "going left"),
    "right": ("moving right", "sliding to the right", "drifting rightwards", "heading right", "going right"),
    "up": ("moving up", "rising", "floating upwards", "going up", "climbing"),
    "down": ("moving down", "falling", "sinking downwards", "going down", "dropping"),
    "grow": ("growing", "getting bigger", "expanding", "swelling", "growing larger"),
    "shrink": ("shrinking", "getting smaller", "contracting", "dwindling", "growing smaller"),
    "still": ("staying still", "not moving", "standing still", "motionless", "resting in place"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black", "pitch black", "dark"),
    "gray": ("gray", "grey", "slate gray"),
    "dark blue": ("dark blue", "navy", "midnight blue"),
    "dark green": ("dark green", "forest green", "deep green"),
}

# {c} colour, {s} shape, {m} motion phrase, {b} background.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {c} {s} {m} on a {b} background",
    "{c} {s} {m}",
    "a {c} {s} {m} over {b}",
    "{b} background, a {c} {s} {m}",
    "the {c} {s} is {m}",
    "a {c} {s} {m} against a {b} backdrop",
    "one {c} {s}, {m}, on {b}",
    "video of a {c} {s} {m}",
)
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "there is a {c} {s} {m} in front of a {b} wall",
    "a single {c} {s} that is {m}",
    "on a {b} screen, one {c} {s} {m}",
    "watch the {c} {s} {m}",
)

HELDOUT_COMBOS_COUNT = 20


def caption(spec: ClipSpec, template: str, rng: random.Random) -> str:
    return template.format(
        c=rng.choice(COLOR_WORDS[spec.color]),
        s=rng.choice(SHAPE_WORDS[spec.shape]),
        m=rng.choice(MOTION_WORDS[spec.motion]),
        b=rng.choice(BACKGROUND_WORDS[spec.background]),
    )


def heldout_combos(seed: int = 5) -> frozenset[tuple[str, str, str]]:
    """(colour, shape, motion) triples never shown in training; each colour/shape/motion keeps >= 1 seen."""
    combos = [(c, s, m) for c in COLORS for s in SHAPES for m in MOTIONS]
    random.Random(seed).shuffle(combos)
    return frozenset(combos[:HELDOUT_COMBOS_COUNT])


def train_specs(seed: int = 5) -> list[ClipSpec]:
    """Every colour x shape x motion x background except the held-out triples."""
    held = heldout_combos(seed)
    return [
        ClipSpec(c, s, m, b)
        for c in COLORS
        for s in SHAPES
        for m in MOTIONS
        for b in BACKGROUNDS
        if (c, s, m) not in held
    ]


def train_captions(per_spec: int, seed: int = 0) -> list[tuple[ClipSpec, str]]:
    """per_spec distinct-ish captions for every training spec, from the training templates only."""
    rng = random.Random(seed)
    out = []
    for spec in train_specs():
        for _ in range(per_spec):
            out.append((spec, caption(spec, rng.choice(TRAIN_TEMPLATES), rng)))
    return out


def eval_prompts(count: int, seed: int = 1) -> list[tuple[ClipSpec, str]]:
    """count prompts of held-out triples (random background) written with held-out templates."""
    rng = random.Random(seed)
    held = sorted(heldout_combos())
    out = []
    for i in range(count):
        c, s, m = held[i % len(held)]
        spec = ClipSpec(c, s, m, rng.choice(list(BACKGROUNDS)))
        out.append((spec, caption(spec, HELDOUT_TEMPLATES[(i // len(held)) % len(HELDOUT_TEMPLATES)], rng)))
    return out


def check_coverage(specs: Sequence[ClipSpec]) -> None:
    """Every colour, shape and motion must occur in the training specs (else it cannot be learned)."""
    for name, values in (("color", COLORS), ("shape", SHAPES), ("motion", MOTIONS)):
        seen = {getattr(s, name) for s in specs}
        missing = set(values) - seen
        if missing:
            raise ValueError(f"training specs lack {name} values {sorted(missing)}")
