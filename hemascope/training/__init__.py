"""Training pipeline: dataset audit, embeddings, classical models, metrics and model bundles."""
