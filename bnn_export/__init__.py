"""Exporter: fold a trained run into a .bnn model (bits, integer thresholds) and an ONNX graph, and check both.

May import bnn_train, bnn_runtime, torch, onnx and onnxruntime.
"""
