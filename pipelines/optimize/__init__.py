"""Compress: encode renditions as small as the preset's quality allows, with no private metadata."""
