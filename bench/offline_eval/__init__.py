"""Offline evaluation of the strategies on 84.51 Complete Journey (run as a module)."""
