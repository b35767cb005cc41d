"""Cell detection with Ultralytics YOLOv8n: dataset conversion, offline training, evaluation, ONNX export.

Modules (none imports ``ultralytics`` at import time; :mod:`hemascope.detection.yolo_env` does it, offline):

- :mod:`~hemascope.detection.yolo_dataset`: the Ultralytics dataset layout and :class:`ConversionReport`.
- :mod:`~hemascope.detection.bccd`: Pascal VOC (BCCD) to YOLO, clipping and dropping bad boxes.
- :mod:`~hemascope.detection.synthetic_boxes`: the study's single-cell variant with one fixed box per image.
- :mod:`~hemascope.detection.yolo_env`: the offline environment Ultralytics needs here.
- :mod:`~hemascope.detection.train`: training, evaluation, export; :mod:`~hemascope.detection.card` the card.
"""

from __future__ import annotations

from hemascope.detection.yolo_dataset import ConversionReport

__all__ = ["ConversionReport"]
