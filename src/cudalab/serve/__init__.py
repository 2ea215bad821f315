"""Export of trained models (torch.export, ONNX; parity-checked) and the FastAPI inference server."""
