"""Operators' passwords are stored as salted scrypt hashes that only the password itself matches."""

from bastion.gateway.operators.passwords import hash_password, verify_password


def test_a_password_matches_its_hash_and_nothing_else() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert verify_password("correct horse battery staple", stored)
    assert not verify_password("correct horse battery stapler", stored)
    assert hash_password("correct horse battery staple") != stored
    assert not verify_password("anything", "not-a-hash")
