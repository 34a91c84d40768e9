"""Evaluation: BUCC-style mining F1 and Tatoeba-style similarity search error."""
