"""The stream-processing side of Sluice: the worker (aiokafka), canonical models and the warehouse."""

from pipeline import native

native.guard()
