"""A tiny, real RLHF stack in numpy: bigram policy (SFT), Bradley-Terry reward model, PPO, eval."""
