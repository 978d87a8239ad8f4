"""TorchServe adapter for the deblur inference core."""
