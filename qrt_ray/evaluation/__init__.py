"""What the benchmarks and ``qrt simulate`` measure policies with: a discrete-event
farm simulator (:mod:`.simulator`) and checks of estimates against noisy simulation
(:mod:`.sim_check`). A layer above :mod:`policies`, which it exercises."""
