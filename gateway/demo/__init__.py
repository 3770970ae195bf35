"""``portcullis demo``: the whole system with synthetic history and live traffic, in one command."""
