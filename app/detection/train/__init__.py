"""Optional PyTorch training and ONNX export of the detector (needs the [train] extra)."""
