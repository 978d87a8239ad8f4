"""Inference core shared by training and serving: model, tiling, image I/O, metrics.

Only torch, numpy, Pillow and pytorch-msssim are imported here, so the same package ships
inside the TorchServe archive unchanged.
"""
