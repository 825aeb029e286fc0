"""Evaluation beyond the plain model: the continuous cache pointer and dynamic evaluation."""
