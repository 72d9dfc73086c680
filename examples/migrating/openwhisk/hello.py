"""An Apache OpenWhisk web action, as `wsk action create hello hello.py --web true` takes it."""

import base64

# A 1x1 transparent GIF.
PIXEL = base64.b64encode(
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
).decode()


def main(args):
    path = args.get("__ow_path", "")
    name = args.get("name", "stranger")
    if path == "/pixel.gif":
        return {"headers": {"Content-Type": "image/gif"}, "body": PIXEL}
    if path == "/page":
        return {"body": f"<h1>Hello, {name}!</h1>"}
    if path not in ("", "/greet"):
        return {"error": {"statusCode": 404, "body": {"message": "no page " + path}}}
    if "name" not in args:
        return {"error": "say who you are with ?name=... or a JSON body"}
    return {"greeting": f"Hello, {name}!", "method": args["__ow_method"]}
