"""The diplotone command line."""
