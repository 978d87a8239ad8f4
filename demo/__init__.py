"""The Gradio page: a client of TorchServe that shows before/after and, with a ground truth, PSNR/SSIM.

Importing this package does nothing; ``python -m demo`` builds and launches the page.
"""
