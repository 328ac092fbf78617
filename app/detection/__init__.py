"""Pure detector code: preprocessing, ONNX Runtime session, decoding, FROC evaluation."""
