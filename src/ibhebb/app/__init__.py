"""Applications built on the trainer: sweeps, the bench, plots, the Fig 3 experiment."""
