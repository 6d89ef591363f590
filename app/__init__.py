"""caseapi: case-information exchange between law-enforcement agencies."""
