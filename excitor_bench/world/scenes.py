"""The visual tiny world: seeded pictures of colored shapes, written as COCO captions and ScienceQA problems.

COCO and ScienceQA cannot be downloaded in the test environment, so `build_scenes` draws small
pictures instead. Each has one to `max_shapes` shapes (circle, square, triangle, diamond) in six
colors on a light background. Each shape sits in its own cell of a 3x3 grid: left, right, top,
bottom or center. The same loaders then read these files and the real data sets.

Files under `out_dir`:
- `coco/dataset_coco.json`: Karpathy split format (see excitor_bench.vision.coco), with images at
  `coco/images/<filepath>/<filename>` as PNG files, train images under "train2014" and val,
  test and restval images under "val2014", as in COCO.
- `scienceqa/problems.json`, `scienceqa/pid_splits.json` and
  `scienceqa/images/<split>/<pid>/image.png`: ScienceQA layout (see excitor_bench.vision.scienceqa).
- `corpus.txt`: documents separated by DOCUMENT_SEPARATOR, from the training split only: the
  captions of each train and restval image, each train problem with its answer written out, the
  lectures, and one glossary document that lists every word the generator can write.
- `summary.json`: the counts that `build_scenes` returns.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from excitor_bench.config import reject_unknown_keys
from excitor_bench.errors import UserError
from excitor_bench.vision.scienceqa import SCIENCEQA_GROUPS, Problem, problem_groups
from excitor_bench.world.writers import DOCUMENT_SEPARATOR, write_json

log = logging.getLogger(__name__)

# Colors that stay easy to tell apart at 32 px on a light background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "yellow": (230, 190, 0),
    "purple": (140, 60, 180),
    "orange": (245, 130, 20),
}
KINDS = ("circle", "square", "triangle", "diamond")

# Cell (column, row) of each position in the 3x3 grid. Row 0 is the top of the picture.
POSITIONS: dict[str, tuple[int, int]] = {
    "top": (1, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom": (1, 2),
}
PLACE_PHRASES = {
    "top": "at the top",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom": "at the bottom",
}
DIRECTIONS = ("north", "east", "south", "west")
OPPOSITE_DIRECTIONS = {"north": "south", "south": "north", "east": "west", "west": "east"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")

# Shape geometry as fractions of a grid cell. The largest extent from the cell's center is
# MAX_RADIUS + JITTER = 0.46 < 0.5, so shapes in different cells never overlap.
MIN_RADIUS = 0.30
MAX_RADIUS = 0.38
JITTER = 0.08
SQUARE_HALF_SIDE = 0.85
"""Half the side of a square as a fraction of its radius, so that it looks about as big as a circle."""


# ---------------------------------------------------------------- settings


@dataclass
class SceneSettings:
    """The `visual.scenes` section of the config: how many pictures, captions and problems to draw."""

    seed: int = 0
    image_size: int = 32
    """Width and height of every picture, in pixels."""
    train_scenes: int = 600
    restval_scenes: int = 20
    val_scenes: int = 50
    test_scenes: int = 100
    max_shapes: int = 2
    """Each picture has 1 to max_shapes shapes, each count equally likely."""
    captions_per_image: int = 5
    """Each caption of an image comes from a different template."""
    scienceqa_train_problems: int = 600
    scienceqa_val_problems: int = 60
    scienceqa_test_problems: int = 240

    def __post_init__(self) -> None:
        self._check_range("seed", 0, 2**63 - 1)
        # Below 24 px a grid cell is under 8 px wide, and shapes a few pixels across look alike.
        self._check_range("image_size", 24, 1024)
        self._check_range("train_scenes", 1, 1_000_000)
        # At least one, because load_karpathy rejects a requested split without images and
        # training requests TRAIN_SPLITS, which includes restval.
        self._check_range("restval_scenes", 1, 1_000_000)
        self._check_range("val_scenes", 1, 1_000_000)
        self._check_range("test_scenes", 1, 1_000_000)
        # Captions of three shapes reach 22 words. More shapes would make them hard for a tiny model.
        self._check_range("max_shapes", 1, 3)
        self._check_range("captions_per_image", 1, len(CAPTION_TEMPLATES))
        # Every problem family appears in every split, so each split has items in every ScienceQA group.
        for name in ("scienceqa_train_problems", "scienceqa_val_problems", "scienceqa_test_problems"):
            self._check_range(name, len(FAMILIES), 1_000_000)

    def _check_range(self, name: str, low: int, high: int) -> None:
        value = getattr(self, name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise UserError(
                f"visual.scenes.{name} = {value!r} is invalid; set it to an integer from {low} to {high} in the config"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, source: str = "the config") -> SceneSettings:
        """Build settings from the `visual.scenes` section, filling defaults for missing keys.

        Raises UserError naming the first unknown key and the file it came from.
        """
        values = dict(values or {})
        reject_unknown_keys(cls, "visual.scenes", values, source)
        return cls(**values)

    def problem_counts(self) -> dict[str, int]:
        return {
            "train": self.scienceqa_train_problems,
            "val": self.scienceqa_val_problems,
            "test": self.scienceqa_test_problems,
        }


# ---------------------------------------------------------------- scenes


@dataclass(frozen=True)
class Shape:
    """One shape of a scene, with its place in the grid and its geometry in pixels."""

    kind: str
    color: str
    position: str
    x: float
    """Center, in pixels from the left edge."""
    y: float
    """Center, in pixels from the top edge."""
    radius: float
    """Half the width of the shape's bounding box, in pixels."""

    @property
    def name(self) -> str:
        """Color and kind, e.g. "red circle"."""
        return f"{self.color} {self.kind}"

    def bounding_box(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) in pixels; the drawn shape lies inside it."""
        return (self.x - self.radius, self.y - self.radius, self.x + self.radius, self.y + self.radius)


@dataclass(frozen=True)
class Scene:
    """A picture: its size, background and shapes in reading order (top to bottom, left to right)."""

    size: int
    background: tuple[int, int, int]
    shapes: tuple[Shape, ...]


def draw_scene(rng: random.Random, size: int, count: int, *, distinct: bool = False,
               positions: tuple[str, ...] | None = None) -> Scene:
    """Draw a scene of `count` shapes in different cells.

    With `distinct`, no two shapes share a kind or a color, so that "the circle" or "the red
    shape" names one shape. `positions` fixes the cells instead of drawing them.
    """
    if positions is None:
        positions = tuple(rng.sample(list(POSITIONS), count))
    if distinct:
        kinds = rng.sample(KINDS, count)
        colors = rng.sample(list(COLORS), count)
    else:
        kinds = [rng.choice(KINDS) for _ in range(count)]
        colors = [rng.choice(list(COLORS)) for _ in range(count)]

    cell = size / 3
    shapes = []
    for kind, color, position in zip(kinds, colors, positions):
        column, row = POSITIONS[position]
        x = (column + 0.5 + rng.uniform(-JITTER, JITTER)) * cell
        y = (row + 0.5 + rng.uniform(-JITTER, JITTER)) * cell
        radius = rng.uniform(MIN_RADIUS, MAX_RADIUS) * cell
        shapes.append(Shape(kind, color, position, x, y, radius))
    shapes.sort(key=lambda shape: POSITIONS[shape.position][::-1])

    background = (rng.randint(228, 252), rng.randint(228, 252), rng.randint(228, 252))
    return Scene(size, background, tuple(shapes))


def render_scene(scene: Scene) -> Image.Image:
    """Paint a scene into an RGB image (no anti-aliasing, so the pixels depend only on the scene)."""
    image = Image.new("RGB", (scene.size, scene.size), scene.background)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        fill = COLORS[shape.color]
        x, y, r = shape.x, shape.y, shape.radius
        if shape.kind == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif shape.kind == "square":
            half = SQUARE_HALF_SIDE * r
            draw.rectangle((x - half, y - half, x + half, y + half), fill=fill)
        elif shape.kind == "triangle":
            draw.polygon([(x, y - r), (x + r, y + 0.8 * r), (x - r, y + 0.8 * r)], fill=fill)
        elif shape.kind == "diamond":
            draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
        else:
            raise ValueError(f"unknown shape kind {shape.kind!r}")
    return image


def save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


# ---------------------------------------------------------------- captions


def with_article(phrase: str) -> str:
    """Put "a" or "an" before a phrase: "an orange circle", "a red square"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def join_phrases(phrases: list[str]) -> str:
    """Join phrases as in English prose: "a", "a and b", "a, b and c"."""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def relation(shape: Shape, other: Shape) -> str:
    """Describe where `shape` is relative to `other`: "above", "to the left of", "below and to the right of"."""
    (column, row), (other_column, other_row) = POSITIONS[shape.position], POSITIONS[other.position]
    parts = []
    if row < other_row:
        parts.append("above")
    elif row > other_row:
        parts.append("below")
    if column < other_column:
        parts.append("to the left of")
    elif column > other_column:
        parts.append("to the right of")
    return " and ".join(parts)


def placed(shape: Shape) -> str:
    return f"{with_article(shape.name)} {PLACE_PHRASES[shape.position]}"


def caption_list(shapes: tuple[Shape, ...]) -> str:
    return join_phrases([placed(shape) for shape in shapes])


def caption_the_is(shapes: tuple[Shape, ...]) -> str:
    return join_phrases([f"the {shape.name} is {PLACE_PHRASES[shape.position]}" for shape in shapes])


def caption_count(shapes: tuple[Shape, ...]) -> str:
    noun = "shape" if len(shapes) == 1 else "shapes"
    names = join_phrases([with_article(shape.name) for shape in shapes])
    return f"a picture of {NUMBER_WORDS[len(shapes)]} {noun}, {names}"


def caption_there_is(shapes: tuple[Shape, ...]) -> str:
    if len(shapes) == 1:
        return f"there is {placed(shapes[0])}"
    first, second, *rest = shapes
    text = f"there is {with_article(second.name)} {relation(second, first)} {with_article(first.name)}"
    return join_phrases([text] + [placed(shape) for shape in rest])


def caption_relation(shapes: tuple[Shape, ...]) -> str:
    if len(shapes) == 1:
        return f"{with_article(shapes[0].name)} alone {PLACE_PHRASES[shapes[0].position]}"
    first, second, *rest = shapes
    text = f"{with_article(first.name)} {relation(first, second)} {with_article(second.name)}"
    return join_phrases([text] + [placed(shape) for shape in rest])


# Examples for a red circle on the left and a blue square on the right:
# "A red circle on the left and a blue square on the right."
# "The red circle is on the left and the blue square is on the right."
# "A picture of two shapes, a red circle and a blue square."
# "There is a blue square to the right of a red circle."
# "A red circle to the left of a blue square."
CAPTION_TEMPLATES: tuple[Callable[[tuple[Shape, ...]], str], ...] = (
    caption_list,
    caption_the_is,
    caption_count,
    caption_there_is,
    caption_relation,
)
# Words that the caption functions write besides shape names, place phrases and numbers.
CAPTION_WORDS = "a an and the is there alone picture of shape shapes above below to left right"


def as_sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop."""
    return text[0].upper() + text[1:] + "."


def caption_tokens(raw: str) -> list[str]:
    """Karpathy's tokens: the lowercased words of the caption, without punctuation."""
    return re.findall(r"[a-z0-9]+", raw.lower())


def draw_captions(rng: random.Random, scene: Scene, count: int) -> list[str]:
    """Write `count` captions of the scene, each from a different template, in random order."""
    templates = rng.sample(CAPTION_TEMPLATES, count)
    return [as_sentence(template(scene.shapes)) for template in templates]


# ---------------------------------------------------------------- COCO


COCO_SPLITS = ("train", "restval", "val", "test")


def coco_folder(split: str) -> str:
    """COCO's image folder for a Karpathy split: Karpathy drew val, test and restval from val2014."""
    return "train2014" if split == "train" else "val2014"


def build_coco(settings: SceneSettings, coco_dir: Path) -> tuple[dict[str, int], list[list[str]]]:
    """Write dataset_coco.json and its images; return image counts per split and the training captions."""
    rng = random.Random(f"coco-{settings.seed}")
    counts = {
        "train": settings.train_scenes,
        "restval": settings.restval_scenes,
        "val": settings.val_scenes,
        "test": settings.test_scenes,
    }
    splits = [split for split in COCO_SPLITS for _ in range(counts[split])]
    # The real file mixes the splits, so a loader must filter rather than slice.
    rng.shuffle(splits)
    # Real cocoids are unique integers with gaps rather than 0..N-1, so draw distinct ones from a wide range.
    cocoids = rng.sample(range(1, 600_000), len(splits))

    entries: list[dict[str, Any]] = []
    training_captions: list[list[str]] = []
    sentence_id = 0
    for image_index, (split, cocoid) in enumerate(zip(splits, cocoids)):
        scene = draw_scene(rng, settings.image_size, rng.randint(1, settings.max_shapes))
        captions = draw_captions(rng, scene, settings.captions_per_image)
        folder = coco_folder(split)
        filename = f"COCO_{folder}_{cocoid:012d}.png"
        save_png(render_scene(scene), coco_dir / "images" / folder / filename)

        sentences = []
        for raw in captions:
            sentences.append({"tokens": caption_tokens(raw), "raw": raw, "imgid": image_index, "sentid": sentence_id})
            sentence_id += 1
        entries.append({
            "filepath": folder,
            "sentids": [sentence["sentid"] for sentence in sentences],
            "filename": filename,
            "imgid": image_index,
            "split": split,
            "sentences": sentences,
            "cocoid": cocoid,
        })
        if split in ("train", "restval"):
            training_captions.append(captions)

    write_json(coco_dir / "dataset_coco.json", {"images": entries, "dataset": "coco"})
    return counts, training_captions


# ---------------------------------------------------------------- ScienceQA


@dataclass
class Draft:
    """A problem before it gets its pid: the text fields and, for image context, its scene."""

    question: str
    choices: list[str]
    answer: int
    hint: str = ""
    solution: str = ""
    scene: Scene | None = None


@dataclass(frozen=True)
class Family:
    """A kind of ScienceQA problem: its metadata and the function that draws one problem."""

    name: str
    subject: str
    grades: tuple[int, int]
    """Lowest and highest grade; each problem draws its grade uniformly from this range."""
    topic: str
    category: str
    skill: str
    lecture: str
    draw: Callable[[random.Random, SceneSettings], Draft]
    words: str = ""
    """Fixed words of the family's questions, hints and solutions, for the corpus glossary."""


def choices_with_answer(rng: random.Random, answer: str, distractors: list[str]) -> tuple[list[str], int]:
    """Return 2 to 5 choices, the answer at a uniformly drawn position, and that position."""
    count = rng.randint(2, min(5, len(distractors) + 1))
    choices = rng.sample(distractors, count - 1)
    index = rng.randrange(count)
    choices.insert(index, answer)
    return choices, index


def direction_between(shape: Shape, other: Shape) -> str:
    """Compass direction of `shape` seen from `other` in the same row or column (north is up)."""
    (column, row), (other_column, other_row) = POSITIONS[shape.position], POSITIONS[other.position]
    if column == other_column:
        return "north" if row < other_row else "south"
    return "west" if column < other_column else "east"


def aligned_positions(rng: random.Random) -> tuple[str, str]:
    """Draw two cells in the same row or column."""
    pairs = [(a, b) for a in POSITIONS for b in POSITIONS
             if a != b and (POSITIONS[a][0] == POSITIONS[b][0] or POSITIONS[a][1] == POSITIONS[b][1])]
    return rng.choice(pairs)


def draw_color_problem(rng: random.Random, settings: SceneSettings) -> Draft:
    scene = draw_scene(rng, settings.image_size, rng.randint(1, settings.max_shapes), distinct=True)
    target = rng.choice(scene.shapes)
    choices, answer = choices_with_answer(rng, target.color, [c for c in COLORS if c != target.color])
    return Draft(f"What color is the {target.kind}?", choices, answer,
                 solution=f"Look at the picture. The {target.kind} is {target.color}.", scene=scene)


def draw_shape_problem(rng: random.Random, settings: SceneSettings) -> Draft:
    scene = draw_scene(rng, settings.image_size, rng.randint(1, settings.max_shapes), distinct=True)
    target = rng.choice(scene.shapes)
    choices, answer = choices_with_answer(rng, target.kind, [k for k in KINDS if k != target.kind])
    return Draft(f"Which shape is {target.color}?", choices, answer,
                 solution=f"Look at the picture. The {target.color} shape is {with_article(target.kind)}.", scene=scene)


def draw_count_problem(rng: random.Random, settings: SceneSettings) -> Draft:
    count = rng.randint(1, settings.max_shapes)
    scene = draw_scene(rng, settings.image_size, count)
    number = NUMBER_WORDS[count]
    choices, answer = choices_with_answer(rng, number, [n for n in NUMBER_WORDS[1:] if n != number])
    noun = "shape" if count == 1 else "shapes"
    return Draft("How many shapes are in the picture?", choices, answer,
                 solution=f"Count the shapes in the picture. There {'is' if count == 1 else 'are'} {number} {noun}.",
                 scene=scene)


def draw_compass_problem(rng: random.Random, settings: SceneSettings) -> Draft:
    scene = draw_scene(rng, settings.image_size, 2, distinct=True, positions=aligned_positions(rng))
    origin, target = rng.sample(scene.shapes, 2)
    direction = direction_between(target, origin)
    choices, answer = choices_with_answer(rng, direction, [d for d in DIRECTIONS if d != direction])
    # About half of the problems state the map convention in the hint, so they count in TXT and IMG.
    hint = "North is at the top of the picture." if rng.random() < 0.5 else ""
    return Draft(f"Which direction is the {target.kind} from the {origin.kind}?", choices, answer, hint=hint,
                 solution=f"North is at the top of the picture. The {target.kind} is {direction} of the {origin.kind}.",
                 scene=scene)


def draw_bag_problem(rng: random.Random, settings: SceneSettings) -> Draft:
    kinds = rng.sample(KINDS, 2)
    colors = rng.sample(list(COLORS), 2)
    names = [f"{color} {kind}" for color, kind in zip(colors, kinds)]
    target = rng.randrange(2)
    choices, answer = choices_with_answer(rng, colors[target], [c for c in COLORS if c != colors[target]])
    hint = f"A bag contains {with_article(names[0])} and {with_article(names[1])}."
    solution = f"The bag contains {with_article(names[target])}. So the {kinds[target]} is {colors[target]}."
    return Draft(f"What color is the {kinds[target]} in the bag?", choices, answer, hint=hint, solution=solution)


def draw_direction_text_problem(rng: random.Random, settings: SceneSettings) -> Draft:
    kinds = rng.sample(KINDS, 2)
    colors = rng.sample(list(COLORS), 2)
    first, second = (f"{color} {kind}" for color, kind in zip(colors, kinds))
    direction = rng.choice(DIRECTIONS)
    opposite = OPPOSITE_DIRECTIONS[direction]
    choices, answer = choices_with_answer(rng, opposite, [d for d in DIRECTIONS if d != opposite])
    hint = f"The {first} is {direction} of the {second}."
    solution = f"If the {first} is {direction} of the {second}, then the {second} is {opposite} of the {first}."
    return Draft(f"Which direction is the {second} from the {first}?", choices, answer, hint=hint, solution=solution)


def draw_word_category_problem(rng: random.Random, settings: SceneSettings) -> Draft:
    if rng.random() < 0.5:
        category, words, others = "shape", list(KINDS), list(COLORS) + list(DIRECTIONS)
    else:
        category, words, others = "color", list(COLORS), list(KINDS) + list(DIRECTIONS)
    word = rng.choice(words)
    choices, answer = choices_with_answer(rng, word, others)
    return Draft(f"Which word names a {category}?", choices, answer,
                 solution=f"The word {word} names a {category}. The other words do not name a {category}.")


def draw_alphabetical_problem(rng: random.Random, settings: SceneSettings) -> Draft:
    pool = sorted(set(KINDS) | set(COLORS) | set(DIRECTIONS) | set(POSITIONS))
    choices = rng.sample(pool, rng.randint(2, 5))
    first = min(choices)
    return Draft("Which word comes first in alphabetical order?", choices, choices.index(first),
                 solution=f"Compare the words letter by letter. The word {first} comes first in alphabetical order.")


def draw_read_sentence_problem(rng: random.Random, settings: SceneSettings) -> Draft:
    kind, color, position = rng.choice(KINDS), rng.choice(list(COLORS)), rng.choice(list(POSITIONS))
    sentence = as_sentence(f"the {color} {kind} is {PLACE_PHRASES[position]}")
    if rng.random() < 0.5:
        category, word, distractors = "color", color, [kind, position]
    else:
        category, word, distractors = "shape", kind, [color, position]
    choices, answer = choices_with_answer(rng, word, distractors)
    return Draft(f"Which word in the sentence names a {category}?", choices, answer,
                 hint=f"Read the sentence.\n{sentence}",
                 solution=f"In the sentence, the word {word} names a {category}.")


# The grade ranges are chosen so that every split has problems in grades 1-6 and in grades 7-12:
# the count family is always in G1-6, the alphabetical and sentence families always in G7-12.
FAMILIES: tuple[Family, ...] = (
    Family("color", "natural science", (1, 3), "physics", "Colors", "Identify the color of a shape in a picture",
           "Objects can have different colors. Red, green, blue, yellow, purple and orange are colors.",
           draw_color_problem, "what color is the look at picture"),
    Family("shape", "natural science", (1, 4), "physics", "Shapes", "Identify a shape in a picture",
           "A shape is the form of an object. A circle, a square, a triangle and a diamond are shapes.",
           draw_shape_problem, "which shape is look at the picture a an"),
    Family("count", "natural science", (1, 2), "physics", "Counting objects", "Count the shapes in a picture",
           "To count the shapes in a picture, point to each shape once and say the next number.",
           draw_count_problem, "how many shapes are in the picture count there is are shape"),
    Family("compass", "social science", (2, 6), "geography", "Cardinal directions",
           "Use cardinal directions in a picture",
           "The four cardinal directions are north, east, south and west. On a map or a picture, north is at "
           "the top, south is at the bottom, east is on the right and west is on the left.",
           draw_compass_problem, "which direction is the from north at top of picture"),
    Family("bag", "natural science", (3, 8), "physics", "Colors", "Use a description to identify a color",
           "A description tells you what objects look like. Read it to find the color of an object.",
           draw_bag_problem, "what color is the in bag a an contains and so"),
    Family("direction_text", "social science", (5, 9), "geography", "Cardinal directions",
           "Use opposite cardinal directions",
           "North and south are opposite directions. East and west are opposite directions. If one object is "
           "north of another, the other object is south of it.",
           draw_direction_text_problem, "which direction is the from of if then"),
    Family("word_category", "language science", (1, 4), "vocabulary", "Categories",
           "Identify words that name shapes or colors",
           "Words can be sorted into groups. Some words name shapes, some name colors and some name directions.",
           draw_word_category_problem, "which word names a shape color the other words do not"),
    Family("alphabetical", "language science", (7, 12), "reference-skills", "Reference skills",
           "Order words alphabetically",
           "Words in a dictionary are in alphabetical order. To put words in alphabetical order, compare their "
           "first letters. If the first letters are the same, compare the next letters.",
           draw_alphabetical_problem, "which word comes first in alphabetical order compare the words letter by"),
    Family("read_sentence", "language science", (7, 12), "grammar", "Nouns and adjectives",
           "Identify words in a sentence that name shapes or colors",
           "A noun can name a shape, such as circle. An adjective can describe a noun, such as the color red.",
           draw_read_sentence_problem, "which word in the sentence names a shape color read is at on"),
)


def build_scienceqa(settings: SceneSettings,
                    scienceqa_dir: Path) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """Write problems.json, pid_splits.json and the images; return group counts and the train problems."""
    rng = random.Random(f"scienceqa-{settings.seed}")
    drafted: list[tuple[str, Family, Draft, int]] = []
    for split, count in settings.problem_counts().items():
        # Cycle through the families so that each appears in each split, then mix the order.
        families = [FAMILIES[index % len(FAMILIES)] for index in range(count)]
        rng.shuffle(families)
        for family in families:
            grade = rng.randint(*family.grades)
            drafted.append((split, family, family.draw(rng, settings), grade))

    # Pids are numbers written as strings, as in the release. Shuffling first interleaves the splits
    # across the pid range, so that no code can rely on pid order.
    rng.shuffle(drafted)
    problems: dict[str, dict[str, Any]] = {}
    pid_splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    group_counts = {split: dict.fromkeys(("problems",) + SCIENCEQA_GROUPS, 0) for split in pid_splits}
    for number, (split, family, draft, grade) in enumerate(drafted, start=1):
        pid = str(number)
        entry = {
            "question": draft.question,
            "choices": draft.choices,
            "answer": draft.answer,
            "hint": draft.hint,
            "image": "image.png" if draft.scene is not None else None,
            "task": "closed choice",
            "grade": f"grade{grade}",
            "subject": family.subject,
            "topic": family.topic,
            "category": family.category,
            "skill": family.skill,
            "lecture": family.lecture,
            "solution": draft.solution,
            "split": split,
        }
        problems[pid] = entry
        pid_splits[split].append(pid)
        if draft.scene is not None:
            save_png(render_scene(draft.scene), scienceqa_dir / "images" / split / pid / "image.png")
        group_counts[split]["problems"] += 1
        for group in problem_groups(problem_from_entry(pid, entry)):
            group_counts[split][group] += 1

    # Small named subsets like the release's minival. Here they are the first quarter of train and of val.
    pid_splits["minitrain"] = pid_splits["train"][: max(1, len(pid_splits["train"]) // 4)]
    pid_splits["minival"] = pid_splits["val"][: max(1, len(pid_splits["val"]) // 4)]
    write_json(scienceqa_dir / "problems.json", problems)
    write_json(scienceqa_dir / "pid_splits.json", pid_splits)
    train_problems = [problems[pid] for pid in pid_splits["train"]]
    return group_counts, train_problems


def problem_from_entry(pid: str, entry: dict[str, Any]) -> Problem:
    """Build a Problem for group counting. Its image path is a placeholder, because only its presence counts."""
    return Problem(
        pid=pid, question=entry["question"], choices=tuple(entry["choices"]), answer=entry["answer"],
        hint=entry["hint"], image=Path(entry["image"]) if entry["image"] else None, subject=entry["subject"],
        topic=entry["topic"], category=entry["category"], grade=entry["grade"], split=entry["split"],
    )


# ---------------------------------------------------------------- corpus


def glossary_document() -> str:
    """Write a document that lists every word the generator can write, so that the corpus covers them all."""
    words: set[str] = set(caption_tokens(CAPTION_WORDS))
    words.update(KINDS, COLORS, POSITIONS, DIRECTIONS, NUMBER_WORDS)
    for phrase in PLACE_PHRASES.values():
        words.update(caption_tokens(phrase))
    for family in FAMILIES:
        words.update(caption_tokens(" ".join((family.words, family.lecture))))
    return (
        "Shapes: " + ", ".join(KINDS) + ".\n"
        "Colors: " + ", ".join(COLORS) + ".\n"
        "Places: " + ", ".join(PLACE_PHRASES.values()) + ".\n"
        "Directions: " + ", ".join(DIRECTIONS) + ".\n"
        "Numbers: " + ", ".join(NUMBER_WORDS) + ".\n"
        "Words: " + ", ".join(sorted(words)) + "."
    )


def problem_document(problem: dict[str, Any]) -> str:
    """Write a train problem as text with its answer spelled out: "What color is the circle? The answer is red."."""
    answer = problem["choices"][problem["answer"]]
    lines = [problem["hint"]] if problem["hint"] else []
    lines.append(f"{problem['question']} The answer is {answer}.")
    lines.append(problem["solution"])
    return "\n".join(lines)


def build_corpus(training_captions: list[list[str]], train_problems: list[dict[str, Any]]) -> list[str]:
    """Return the corpus documents: glossary, lectures, training captions and train problems."""
    documents = [glossary_document()]
    documents.extend(family.lecture for family in FAMILIES)
    documents.extend("\n".join(captions) for captions in training_captions)
    documents.extend(problem_document(problem) for problem in train_problems)
    return documents


# ---------------------------------------------------------------- entry point


def build_scenes(settings: SceneSettings | dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Draw the scenes from `settings` and write the COCO, ScienceQA and corpus files under `out_dir`.

    The same settings give byte-identical files. Returns the counts that summary.json stores:
    COCO images per split, ScienceQA problems per split and per group, and corpus documents.
    """
    if not isinstance(settings, SceneSettings):
        settings = SceneSettings.from_dict(settings)
    out_dir = Path(out_dir)

    coco_counts, training_captions = build_coco(settings, out_dir / "coco")
    group_counts, train_problems = build_scienceqa(settings, out_dir / "scienceqa")
    documents = build_corpus(training_captions, train_problems)
    (out_dir / "corpus.txt").write_text(DOCUMENT_SEPARATOR.join(documents) + "\n", encoding="utf-8")

    summary = {
        "coco_images": coco_counts,
        "coco_captions": sum(coco_counts.values()) * settings.captions_per_image,
        "scienceqa": group_counts,
        "corpus_documents": len(documents),
    }
    write_json(out_dir / "summary.json", summary)
    log.info("wrote %d COCO images, %d ScienceQA problems and %d corpus documents to %s",
             sum(coco_counts.values()), sum(counts["problems"] for counts in group_counts.values()),
             len(documents), out_dir)
    return summary
