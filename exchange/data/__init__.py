"""Files that ``exchange init`` writes into a new workspace."""
