"""Images in: the one safety check every user image passes, and the birds' preprocessing described as data."""
