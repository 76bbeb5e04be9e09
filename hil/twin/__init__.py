"""Digital twins: differentiable models of a physical system, fitted to data collected from it.

`collect` measures a space-filling design with repeats (`TwinData`); `models` holds the physics twin (the
system's noiseless physics with learnable calibration), the neural twin and physics plus a neural residual;
`fit` trains a twin with a held-out split and early stopping; `fidelity` measures it against the device.
"""
