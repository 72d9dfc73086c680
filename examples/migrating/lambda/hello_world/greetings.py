def greeting_for(name):
    return f"Hello, {name}!"
