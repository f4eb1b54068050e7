"""Training: the loop, schedules, checkpoints, gradient combiners and the run driver."""
