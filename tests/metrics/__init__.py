"""Tests of flaxish.metrics."""
