"""The networks the harness trains: the β-VAE, the DCGAN and a VQGAN-style decoder."""
