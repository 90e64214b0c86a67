"""Seeded fictional entities and their attribute values (the tiny world's facts).

Real LLaMA weights and real data sets cannot be downloaded in the test environment, so the
benchmark invents a small universe instead: a few kinds of entities, each kind an MMLU-style
subject, each entity with one value per attribute. Everything downstream (the pretraining
corpus, the MMLU files, the Alpaca data) is rendered from the `World` built here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from excitor_bench.config import reject_unknown_keys
from excitor_bench.errors import UserError

# MMLU groups its 57 subjects into these four categories (lm-evaluation-harness, tasks/mmlu).
MMLU_CATEGORIES = ("stem", "humanities", "social_sciences", "other")


@dataclass(frozen=True)
class KindSpec:
    """A kind of entity, the fictional MMLU subject it forms and its attribute value pools."""

    kind: str
    subject: str
    subject_name: str
    category: str
    attributes: dict[str, tuple[str, ...]]


# The first four kinds cover the four MMLU categories, so any `kinds >= 4` uses every category.
# Values are ordinary single words that byte-level BPE splits into a token or two, and every
# attribute has 8 values, the maximum for `values_per_attribute`.
KIND_SPECS: tuple[KindSpec, ...] = (
    KindSpec(
        "creature", "xenobiology", "xenobiology", "stem",
        {
            "habitat": ("caves", "reefs", "dunes", "swamps", "glaciers", "forests", "canyons", "meadows"),
            "diet": ("moss", "insects", "fish", "berries", "roots", "seeds", "plankton", "fungi"),
            "color": ("crimson", "amber", "teal", "violet", "silver", "ochre", "indigo", "ivory"),
            "call": ("whistle", "click", "hum", "roar", "chirp", "growl", "trill", "hiss"),
            "lifespan": ("days", "weeks", "months", "seasons", "years", "decades", "centuries", "ages"),
        },
    ),
    KindSpec(
        "kingdom", "vornish_history", "Vornish history", "humanities",
        {
            "emblem": ("falcon", "lion", "serpent", "stag", "owl", "bear", "wolf", "heron"),
            "ruler": ("queen", "duke", "council", "priest", "general", "merchant", "poet", "child"),
            "founding war": ("salt", "spice", "river", "bridge", "crown", "harbor", "temple", "orchard"),
            "archive": ("scrolls", "tablets", "songs", "maps", "coins", "murals", "ledgers", "banners"),
            "fall": ("flood", "plague", "famine", "revolt", "drought", "earthquake", "invasion", "fire"),
        },
    ),
    KindSpec(
        "guild", "guild_economics", "guild economics", "social_sciences",
        {
            "currency": ("shells", "beads", "feathers", "glass", "copper", "tokens", "pepper", "wax"),
            "trade good": ("wool", "timber", "honey", "iron", "silk", "grain", "ink", "rope"),
            "market": ("docks", "bazaar", "square", "tower", "mill", "tunnel", "garden", "ferry"),
            "tax": ("tithe", "toll", "levy", "tariff", "duty", "fee", "rent", "tribute"),
            "rival": ("pirates", "monks", "smugglers", "bankers", "nomads", "miners", "hunters", "weavers"),
        },
    ),
    KindSpec(
        "dish", "astral_cuisine", "astral cuisine", "other",
        {
            "main ingredient": ("lentils", "squash", "barley", "eel", "quail", "turnip", "millet", "clams"),
            "spice": ("saffron", "cumin", "clove", "ginger", "sumac", "fennel", "mace", "anise"),
            "cooking method": ("roasting", "steaming", "smoking", "frying", "baking", "boiling", "curing", "grilling"),
            "season": ("spring", "summer", "autumn", "winter", "monsoon", "harvest", "midnight", "dawn"),
            "vessel": ("bowl", "skillet", "kettle", "clay", "leaf", "plank", "gourd", "basket"),
        },
    ),
    KindSpec(
        "mineral", "lithochemistry", "lithochemistry", "stem",
        {
            "luster": ("glassy", "pearly", "silky", "waxy", "dull", "greasy", "metallic", "resinous"),
            "origin": ("volcanoes", "riverbeds", "meteorites", "marshes", "cliffs", "geysers", "craters", "beaches"),
            "crystal": ("cubes", "needles", "plates", "prisms", "spheres", "spirals", "fans", "stars"),
            "use": ("lenses", "dyes", "medicine", "jewelry", "glue", "pottery", "weapons", "clocks"),
            "hardness": ("one", "two", "three", "four", "five", "six", "seven", "eight"),
        },
    ),
    KindSpec(
        "poet", "velorian_literature", "Velorian literature", "humanities",
        {
            "genre": ("sonnets", "ballads", "elegies", "hymns", "fables", "epics", "riddles", "odes"),
            "muse": ("rain", "ships", "mothers", "ruins", "stars", "horses", "bread", "mirrors"),
            "patron": ("baker", "admiral", "abbess", "judge", "smith", "widow", "prince", "ferryman"),
            "meter": ("dactyls", "iambs", "trochees", "spondees", "anapests", "couplets", "tercets", "quatrains"),
            "exile": ("island", "desert", "monastery", "prison", "mountain", "marsh", "lighthouse", "vineyard"),
        },
    ),
    KindSpec(
        "tribe", "steppe_sociology", "steppe sociology", "social_sciences",
        {
            "kinship": ("maternal", "paternal", "sworn", "adoptive", "elective", "lunar", "totemic", "seasonal"),
            "livestock": ("goats", "yaks", "camels", "horses", "sheep", "reindeer", "llamas", "oxen"),
            "dwelling": ("yurts", "huts", "tents", "boats", "burrows", "wagons", "towers", "caverns"),
            "festival": ("lanterns", "drums", "masks", "kites", "bonfires", "dances", "feasts", "races"),
            "council": ("elders", "warriors", "healers", "singers", "twins", "riders", "weavers", "scouts"),
        },
    ),
    KindSpec(
        "machine", "clockwork_engineering", "clockwork engineering", "other",
        {
            "power": ("steam", "springs", "wind", "water", "weights", "sunlight", "magnets", "pedals"),
            "metal": ("brass", "bronze", "tin", "zinc", "nickel", "pewter", "cobalt", "steel"),
            "purpose": ("milling", "pumping", "weaving", "printing", "sorting", "lifting", "counting", "sawing"),
            "gear": ("spur", "worm", "bevel", "helical", "planetary", "ratchet", "crown", "rack"),
            "inventor": ("tinker", "nun", "sailor", "farmer", "clerk", "glazier", "cooper", "jeweler"),
        },
    ),
)

MAX_VALUES_PER_ATTRIBUTE = 8
MAX_ATTRIBUTES_PER_KIND = 5

# Syllables for entity names. Names are two or three syllables, capitalised, and unique
# across the whole world, so a name alone identifies an entity.
NAME_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "sh", "th", "tr")
NAME_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
NAME_CODAS = ("", "", "", "n", "r", "l", "x", "s")


@dataclass
class WorldSettings:
    """The `world:` section of the config: how big the world is and how its files are drawn."""

    seed: int = 0
    kinds: int = 6
    entities_per_kind: int = 6
    attributes_per_kind: int = 4
    values_per_attribute: int = 8
    fact_documents_per_entity: int = 28
    qa_documents_per_entity: int = 6
    practice_questions_per_fact: int = 40
    practice_questions_per_document: int = 4
    mmlu_dev_per_subject: int = 5
    instruction_train_examples: int = 2000
    low_quality_share: float = 0.3
    transform_share: float = 0.2
    heldout_pair_share: float = 0.2
    test_transform_examples: int = 20

    def __post_init__(self) -> None:
        self._check_range("kinds", len(MMLU_CATEGORIES), len(KIND_SPECS))
        self._check_range("entities_per_kind", 2, 400)
        self._check_range("attributes_per_kind", 1, MAX_ATTRIBUTES_PER_KIND)
        self._check_range("values_per_attribute", 4, MAX_VALUES_PER_ATTRIBUTE)
        self._check_range("fact_documents_per_entity", 1, 100)
        self._check_range("qa_documents_per_entity", 0, 100)
        self._check_range("practice_questions_per_fact", 0, 1000)
        self._check_range("practice_questions_per_document", 1, 100)
        self._check_range("mmlu_dev_per_subject", 1, 100)
        self._check_range("instruction_train_examples", 1, 1_000_000)
        self._check_range("test_transform_examples", 0, 100_000)
        for name in ("low_quality_share", "transform_share", "heldout_pair_share"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise UserError(f"world.{name} = {value!r} is invalid; set it to a number in [0, 1) in the config")

        facts_per_subject = self.entities_per_kind * self.attributes_per_kind
        if facts_per_subject <= self.mmlu_dev_per_subject:
            raise UserError(
                f"world.mmlu_dev_per_subject = {self.mmlu_dev_per_subject} leaves no test questions, because each "
                f"subject has only {facts_per_subject} facts; raise world.entities_per_kind or lower mmlu_dev_per_subject"
            )
        if self.heldout_pair_count() < 1 or self.heldout_pair_count() >= self.fact_count():
            raise UserError(
                f"world.heldout_pair_share = {self.heldout_pair_share} holds out {self.heldout_pair_count()} of "
                f"{self.fact_count()} facts; set it so that at least one fact is held out and one is kept for training"
            )

    def _check_range(self, name: str, low: int, high: int) -> None:
        value = getattr(self, name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise UserError(f"world.{name} = {value!r} is invalid; set it to an integer from {low} to {high} in the config")

    @classmethod
    def from_dict(cls, settings: dict[str, Any] | None, source: str = "the config") -> "WorldSettings":
        """Build settings from the `world:` section, filling defaults for missing keys.

        Raises UserError naming the first unknown key and the file it came from.
        """
        settings = dict(settings or {})
        reject_unknown_keys(cls, "world", settings, source)
        return cls(**settings)

    def fact_count(self) -> int:
        return self.kinds * self.entities_per_kind * self.attributes_per_kind

    def heldout_pair_count(self) -> int:
        return round(self.heldout_pair_share * self.fact_count())

    def low_quality_count(self) -> int:
        """Number of low-quality Alpaca training examples: round(share * examples)."""
        return round(self.low_quality_share * self.instruction_train_examples)

    def transform_count(self) -> int:
        """Number of Alpaca training examples that need no world knowledge."""
        return round(self.transform_share * self.instruction_train_examples)


@dataclass(frozen=True)
class Fact:
    """One (entity, attribute) -> value statement."""

    kind: str
    subject: str
    entity: str
    attribute: str
    value: str


@dataclass
class KindInstance:
    """The kind as drawn for this world: its chosen attributes, value pools and entities."""

    spec: KindSpec
    attributes: dict[str, list[str]]
    entities: dict[str, dict[str, str]]


@dataclass
class World:
    """The drawn universe: kinds in config order, each with entities and their facts."""

    seed: int
    kinds: list[KindInstance]

    def facts(self) -> list[Fact]:
        """Return every fact in a fixed order: kind, entity, attribute."""
        facts = []
        for instance in self.kinds:
            for entity, values in instance.entities.items():
                for attribute, value in values.items():
                    facts.append(Fact(instance.spec.kind, instance.spec.subject, entity, attribute, value))
        return facts

    def values_of(self, kind: str, attribute: str) -> list[str]:
        """Return the value pool of one attribute, which the distractors are drawn from."""
        for instance in self.kinds:
            if instance.spec.kind == kind:
                return instance.attributes[attribute]
        raise KeyError(kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "kinds": [
                {
                    "kind": instance.spec.kind,
                    "subject": instance.spec.subject,
                    "subject_name": instance.spec.subject_name,
                    "category": instance.spec.category,
                    "attributes": instance.attributes,
                    "entities": instance.entities,
                }
                for instance in self.kinds
            ],
        }


def draw_names(rng: random.Random, count: int) -> list[str]:
    """Draw `count` unique pronounceable names of two or three syllables."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        syllables = rng.choice((2, 2, 3))
        name = "".join(rng.choice(NAME_ONSETS) + rng.choice(NAME_VOWELS) for _ in range(syllables))
        name = (name + rng.choice(NAME_CODAS)).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def build_world_model(settings: WorldSettings) -> World:
    """Draw the entities and their attribute values from `settings.seed`."""
    rng = random.Random(f"world-{settings.seed}")
    names = draw_names(rng, settings.kinds * settings.entities_per_kind)

    kinds = []
    for index, spec in enumerate(KIND_SPECS[: settings.kinds]):
        attribute_names = rng.sample(sorted(spec.attributes), settings.attributes_per_kind)
        attributes = {
            name: rng.sample(list(spec.attributes[name]), settings.values_per_attribute) for name in attribute_names
        }
        start = index * settings.entities_per_kind
        entities = {
            name: {attribute: rng.choice(pool) for attribute, pool in attributes.items()}
            for name in names[start : start + settings.entities_per_kind]
        }
        kinds.append(KindInstance(spec, attributes, entities))
    return World(settings.seed, kinds)
