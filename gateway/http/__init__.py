"""The HTTP adapter: aiohttp application, routes, the request gate and handlers."""
