"""Shared latent-search machinery: identity losses, latent optimisers, per-sample seeding, batched search."""
