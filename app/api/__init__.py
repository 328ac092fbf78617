"""HTTP layer: one router per resource; handlers are thin."""
