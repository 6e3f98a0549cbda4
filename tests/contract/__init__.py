"""Behaviour suites shared by fakes and real adapters (see transport_contract.py)."""

import pytest

# The suites live outside test_*.py files; let pytest rewrite their asserts for clear failures.
pytest.register_assert_rewrite("tests.contract.transport_contract")
