"""The infrastructure every domain package stands on: the database and its
one unit of work, the journal, settings, errors and HTTP conventions.

Nothing here imports a domain package (tests/test_layers.py checks it).
"""
