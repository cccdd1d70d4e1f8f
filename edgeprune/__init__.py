"""edgeprune: hardware-aware structured pruning of CNNs for edge devices.

The search sees latency measured on the target runtime (ONNX Runtime on CPU,
TensorRT on NVIDIA GPUs and Jetson), not a FLOPs proxy.
"""

__version__ = "0.1.0"
