"""The training harness: data, the train loop, evaluation and the run directory."""
