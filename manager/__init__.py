"""Preparation: datasets + parameter grids -> the LFADS run-folder tree, and loading results back."""
