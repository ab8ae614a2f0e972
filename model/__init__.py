"""The GRAM network, its training and evaluation, and the puzzle task families. Needs torch only."""
