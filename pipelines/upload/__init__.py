"""The stages that decide what may enter the farm: scan, validate, hash."""
