"""Speed and memory benchmarks of the SDR and of the penalty."""
