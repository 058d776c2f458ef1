"""Registered attacks, one file each, composing `mibench.gan` and `mibench.inversion`."""
