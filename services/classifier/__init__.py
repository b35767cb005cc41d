"""The classifier service: embeddings -> class probabilities from every model of a versioned bundle."""
