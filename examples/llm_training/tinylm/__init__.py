"""A tiny language model trained end to end in numpy: tokenize, train, evaluate, serve."""
