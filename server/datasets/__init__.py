"""Custom detectors, part 1: datasets, their audio files and annotation sets (Relay style)."""
