"""The data pipeline, one step a module: read → clean → stats → preprocess (and split)."""
