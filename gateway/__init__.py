"""The gateway: the one public API (AnalysisService and the Open Inference Protocol) over the services."""
