"""The `fn` command: deploy, call and inspect functions; `fn up` runs the platform."""
