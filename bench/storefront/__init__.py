"""Storefront traffic benchmark: shoppers' events and recommendation requests, interleaved."""
