pytest_plugins = ["tests.fix_db", "async_db.pytest_plugin", "tests.orm_fixtures"]
