"""The quick-tour function: greets by name, counts its calls per instance."""

calls = 0  # module state: lives as long as the warm instance


def handler(event, context):
    global calls
    calls += 1
    name = event.get("name", "world")
    print(f"greeting {name} (call {calls} on this instance)")
    return {"hello": name, "calls": calls, "version": context.version}
