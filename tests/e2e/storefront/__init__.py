"""Browser tests of the storefront SDK (a package, so that its conftest keeps its own name)."""
