"""The terms of the loss, each a pure function of one unit's images or activations."""
