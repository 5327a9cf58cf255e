"""The input contract and file formats every layer agrees on: input size, pixel encodings and normalisation,
label tables, config loading, the checkpoint format (safe loading) and foreign weight files. Imports nothing
else of the package."""
