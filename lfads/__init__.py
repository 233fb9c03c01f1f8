"""LFADS in TensorFlow 2, command-line and file compatible with the original run_lfads.py."""
