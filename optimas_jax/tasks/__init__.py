"""Tasks: each folder holds a data source, a system and a metric."""
