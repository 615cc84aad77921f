"""The stream-processing side of Sluice: the Faust worker, canonical models and the warehouse."""
