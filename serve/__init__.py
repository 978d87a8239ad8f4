"""Start, stop and talk to TorchServe (requests only; never imports torch)."""
