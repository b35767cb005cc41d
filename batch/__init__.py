"""Scale-out batch analysis on Ray Data: the services' own pipeline over a whole image archive.

Bytes are read in Ray tasks; decoding, the input check, preprocessing and the ONNX session (the feature
service's :class:`~services.feature.core.FeatureCore`), the bundle's models (the classifier service's
:class:`~services.classifier.core.ClassifierCore`), the consensus (:mod:`hemascope.consensus`, as in the
gateway) and, when asked, the detector (:class:`~services.detector.core.DetectorCore`) run in callable
classes on a Ray actor pool, each loading its models once. The driver streams the results into a Parquet
dataset (errors in their own table) and skips, on a rerun, the images already there.
"""
