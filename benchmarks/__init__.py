"""The measured comparisons of the README's Performance section (scripts, not tests), and the helpers they share."""
