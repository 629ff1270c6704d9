"""Training the tiny preset on a procedural text-to-video world (issue 5): world, captions, VAE, network."""
