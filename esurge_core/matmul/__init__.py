"""The models' weight products and the pluggable backends that may compute them."""
