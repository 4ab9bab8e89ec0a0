"""`meshc graph`: a picture of a program's policy, from its IR alone.

    model.py   the IR as a graph: services, who may call whom (allowed, partial, denied), routes
    layout.py  a deterministic layered layout (positions computed here, never in the browser)
    render.py  the picture: a standalone SVG, or a self-contained HTML page around the same SVG
"""
