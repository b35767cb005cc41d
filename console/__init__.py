"""The Hemascope research console: a web application (Starlette, server-rendered Jinja2 templates, htmx)
for people who analyse, browse and review cell images. It is a client of the gateway like any other
(:mod:`hemascope.client`); it never calls a service directly."""
