"""Noiseless physics of the benches, as differentiable torch functions.

Each module holds the physics of one kind of bench with its physical parameters as arguments. Simulators add
their non-idealities and noise around these functions; physics twins call the same functions with learnable
calibration parameters. Nothing here draws random numbers.
"""
