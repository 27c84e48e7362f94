"""Thin command-line entry points (spark-submit / torchrun), one per stage."""
