"""What pyproject.toml cannot say: folders outside the package that ship inside it.

`migrations/` and `seed/` stay at the top of the repository, where Alembic
and the people who read the seed's sources look for them; in the wheel they
become `app/_migrations` and `app/_seed`, which app.core.config.shipped() finds
from any working directory.
"""

from setuptools import find_packages, setup

SHIPPED = {
    "app._migrations": "migrations",
    "app._migrations.versions": "migrations/versions",
    "app._seed": "seed",
}

setup(
    packages=[*find_packages(include=["app", "app.*"]), *SHIPPED],
    package_dir=SHIPPED,
    package_data={"app._migrations": ["script.py.mako"], "app._seed": ["*"]},
)
