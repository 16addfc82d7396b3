"""The online endpoint: scores requests with whatever `@champion` points at and hands every
answer to a prediction log, which lands them as batch files the loop monitors.

`mlops_loop.serving.app.create_app` builds the ASGI app; `mlops-loop serve` runs it.
"""
