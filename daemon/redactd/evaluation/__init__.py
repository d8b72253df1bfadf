"""Measuring detection quality on labelled image sets (``labels.jsonl``)."""
