"""Built-in plugins. Each module here is registered through the same hooks as a third-party plugin."""
