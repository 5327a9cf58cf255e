"""Data: dataset readers (datasets/), the one training augmentation (transforms), batching (collate) and the
synthetic street scenes (synthetic/: world model, renderer, dataset export, drive bags)."""
