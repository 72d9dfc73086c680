"""The call path both the HTTP gateway and the event system use: resolve a function version from
memory (`functions`), take a warm slot (the scheduler), run the call (`execute`), and record it
(`activations`, `metrics`). It serves no HTTP and knows nothing of who asked for the call."""
