"""The gateway: Hemascope's one public API (AnalysisService, and the Open Inference Protocol) over the services."""
