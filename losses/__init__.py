"""Pretraining losses, each a small nn.Module with its weights as constructor arguments."""
