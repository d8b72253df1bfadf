"""Detectors: the OpenVINO runtime, model adapters and their registry."""
