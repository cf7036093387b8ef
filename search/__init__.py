"""Search: spaces, the weight-sharing supernet, samplers, supernet training, evaluation and MCEA."""
