"""Puzzle task families behind one protocol (see base.py)."""
