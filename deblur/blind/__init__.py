"""Kernel-aware restoration (torch only): a blind camera-shake kernel estimate and a non-blind deconvolution.

For blur that is the same across the image (a camera shake while the shutter is open), finding the kernel
and inverting it recovers far more than a small network does. ``settings`` holds every tunable,
``fourier`` the Fourier-domain helpers, ``estimate`` the coarse-to-fine L0 estimator, ``deconvolve`` the
sparse-prior deconvolution, ``decide`` the gate and ``blind_deconvolution``, which answers only with a
trusted estimate. Nothing is imported here: import the module you need.
"""
