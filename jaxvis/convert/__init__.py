"""Readers and converters for the weight files researchers have (none needs torch or TensorFlow)."""
