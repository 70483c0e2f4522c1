"""The destination catalog: the SDK (`base`), the registry, one module per tool."""
