"""Fine-tuning EfficientNet-Lite0 on blood cells: a named backbone with its own weights hash.

The ImageNet stem and first stages stay frozen (they see edges and textures, and freezing them keeps the
CPU cost bounded); the last stages are fine-tuned on re-acquired copies of every training image
(:mod:`hemascope.training.acquisition`), sampled so that every (class, site) pair weighs the same.
"""
