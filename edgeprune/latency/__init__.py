"""Latency of a candidate architecture, in one place: measured through a target (the
oracle, cached by architecture signature) or predicted per layer (the lookup table, built
from measurements on the same target). Sits beside ``targets/`` and imports nothing from
the pipeline; the pipeline hands the oracle its ONNX exporter.
"""
