"""The caseapi benchmark: a synthetic dataset, a hand-written reference server and a load driver.

Never part of the test suite. See bench/README.md.
"""
