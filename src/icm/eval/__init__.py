"""Evaluation: rate–distortion points, classical anchors, Bjøntegaard deltas.

Imported only by the commands that evaluate (never by ``import icm``).
"""
