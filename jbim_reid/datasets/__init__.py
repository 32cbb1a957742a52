"""Cross-resolution datasets (placeholder until the dataset modules land)."""
DATASETS = {}
