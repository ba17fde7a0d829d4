"""Evaluating a pair: metrics on scikit-learn, calibration and the threshold, and the reports' figures."""
