"""Attention: the metadata a model forward receives and the backends that compute it."""
