"""The web process: the built dashboard, the demo shop and a same-origin proxy to the api."""
