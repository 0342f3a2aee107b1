"""Error mitigation, each technique in pure steps: construct circuits, execute, combine.

- ``readout``: readout mitigation on the observed bitstrings (NumPy, or CuPy on a GPU).
- ``readout_cache``: a device's measured readout errors, reused per calibration.
- ``twirling``: Pauli twirling of 2-qubit gates and measurements.
- ``zne``: gate folding and zero-noise extrapolation.
- ``observables``: measurement bases, parities and standard errors.
"""
