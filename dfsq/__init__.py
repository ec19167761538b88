"""PyTorch side of the toolkit: EDSR, training, DFSQ and Min-Max quantization, evaluation, export."""
