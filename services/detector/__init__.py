"""The detector service: YOLO cell detection on whole blood-smear images."""
