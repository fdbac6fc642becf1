"""Scoring of recipe outputs (WER, intent accuracy) and result tables."""
