"""Build the TorchServe model archive (.mar) from a checkpoint; imports no model code."""
