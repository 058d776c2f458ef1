"""Shared GAN networks and training loops, composed by attacks."""
