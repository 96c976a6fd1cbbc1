"""Resize and convert: from the original's bytes to pixels in the shape and colour a preset asks."""
