"""Team review: assignments, blinded double reads, adjudication and agreement statistics."""
