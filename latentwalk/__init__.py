"""latentwalk: prompt-travel music videos from a YAML timeline."""
