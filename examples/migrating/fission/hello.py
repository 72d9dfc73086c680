"""A function for Fission's Python environment: `main()` reads Flask's request.

fission function create --name hello --env python --code hello.py
fn deploy examples/migrating/fission/hello.py --name fission-example
"""

from flask import current_app, request


def main():
    current_app.logger.info("%s %s", request.method, request.path)
    name = request.args.get("name") or (request.get_json(silent=True) or {}).get("name")
    if not name:
        return "name is required\n", 400
    return f"Hello, {name}!\n"
