"""Scoring of recipe outputs (WER, intent accuracy, SLURP's SLU-F1 and span F1s) and result tables."""
