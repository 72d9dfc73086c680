"""The quick-tour function: greets by name and logs how often this instance was called."""

calls = 0  # module state lives as long as the warm instance


def handler(event, context):
    global calls
    calls += 1
    name = event.get("name", "world")
    print(f"greeting {name}, call {calls} on this instance")
    return {"hello": name, "version": context.version}
