"""Pure DeepLesion dataset code: no web framework, no database."""
